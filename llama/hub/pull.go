package hub

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultEndpoint is the public Hub; $HF_ENDPOINT replaces it, as in huggingface_hub.
const DefaultEndpoint = "https://huggingface.co"

// Endpoint is $HF_ENDPOINT without a trailing slash, else DefaultEndpoint.
func Endpoint() string {
	if e := os.Getenv("HF_ENDPOINT"); e != "" {
		return strings.TrimRight(e, "/")
	}
	return DefaultEndpoint
}

// Token is the access token huggingface_hub would send: $HF_TOKEN (or its older name
// $HUGGING_FACE_HUB_TOKEN), else the file `huggingface-cli login` writes ($HF_TOKEN_PATH, else
// $HF_HOME/token). Empty when there is none.
func Token() string {
	for _, v := range []string{"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"} {
		if t := strings.TrimSpace(os.Getenv(v)); t != "" {
			return t
		}
	}
	p := os.Getenv("HF_TOKEN_PATH")
	if p == "" {
		p = filepath.Join(hfHome(), "token")
	}
	b, err := os.ReadFile(expandHome(p))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Wanted says whether pull fetches a file of the repository: what tiller reads (config,
// generation config, tokenizer files, chat template, safetensors weights and their index), never
// pickled weights (*.bin, *.pth) or other folders (original/, onnx/, …).
func Wanted(name string) bool {
	if strings.Contains(name, "/") {
		return false
	}
	switch name {
	case "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
		"special_tokens_map.json", "chat_template.jinja":
		return true
	}
	return strings.HasSuffix(name, ".safetensors") || strings.HasSuffix(name, ".safetensors.index.json")
}

// Options configure Pull. Zero fields take the environment's values (Endpoint, Token, CacheDir)
// or defaults.
type Options struct {
	Endpoint string
	Token    string
	Cache    string
	Client   *http.Client  // nil: http.DefaultClient's transport, with redirects handled here
	Progress io.Writer     // a progress line (bytes, speed, time left); nil for none
	Stall    time.Duration // a download that receives nothing for this long fails (resumable); 0: one minute
}

// Limits on what a Hub (or anything at HF_ENDPOINT) may make pull do.
const (
	maxInfoBytes  = 32 << 20 // the revision's JSON file list
	maxFiles      = 100_000  // entries in that list
	maxRedirects  = 10
	maxErrorBytes = 4 << 10 // of an error response's body, quoted in the error
)

// Pull downloads the files of ref that tiller uses into the cache, the way huggingface_hub's
// snapshot_download does, and returns the snapshot folder. Files already there are not fetched
// again; a download cut short resumes where it stopped (blobs/ETAG.incomplete and an HTTP Range
// request); every file's size, and its hash where the ETag is one, is checked before it enters
// the cache.
func Pull(ctx context.Context, ref Ref, opts Options) (string, error) {
	if parsed, ok := ParseRef(ref.Repo + "@" + ref.Revision); !ok || parsed != ref {
		return "", fmt.Errorf("%q at revision %q is not a model name ORG/NAME with a revision", ref.Repo, ref.Revision)
	}
	p := &puller{ref: ref, opts: opts}
	if p.opts.Stall <= 0 {
		p.opts.Stall = time.Minute
	}
	if p.opts.Endpoint == "" {
		p.opts.Endpoint = Endpoint()
	}
	p.opts.Endpoint = strings.TrimRight(p.opts.Endpoint, "/")
	if p.opts.Cache == "" {
		p.opts.Cache = CacheDir()
	}
	base := http.DefaultClient
	if opts.Client != nil {
		base = opts.Client
	}
	c := *base
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	p.client = &c
	return p.pull(ctx)
}

type puller struct {
	ref    Ref
	opts   Options
	client *http.Client
	prog   *progress
}

// remoteFile is one file of the snapshot as the resolve endpoint describes it.
type remoteFile struct {
	name string
	etag string // the blob's name: sha256 (LFS) or git sha1, lowercase hex
	size int64
	url  string // where the bytes are (the redirect's target, or the resolve URL itself)
}

func (p *puller) pull(ctx context.Context) (string, error) {
	commit, names, err := p.revision(ctx)
	if err != nil {
		return "", err
	}
	folder := repoFolder(p.opts.Cache, p.ref.Repo)
	var files []remoteFile
	var total int64
	for _, name := range names {
		f, err := p.head(ctx, commit, name)
		if err != nil {
			return "", err
		}
		files = append(files, f)
		if !exists(filepath.Join(folder, "blobs", f.etag), f.size) {
			total += f.size
		}
	}
	p.prog = newProgress(p.opts.Progress, p.ref.String(), total)
	snap := filepath.Join(folder, "snapshots", commit)
	for _, dir := range []string{filepath.Join(folder, "blobs"), snap} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
	}
	for _, f := range files {
		blob := filepath.Join(folder, "blobs", f.etag)
		if err := p.fetch(ctx, f, blob); err != nil {
			return "", err
		}
		link := filepath.Join(snap, f.name)
		os.Remove(link)
		if err := os.Symlink(path.Join("..", "..", "blobs", f.etag), link); err != nil {
			return "", err
		}
	}
	p.prog.finish()
	if p.ref.Revision != commit {
		refFile := filepath.Join(folder, "refs", filepath.FromSlash(p.ref.Revision))
		if err := os.MkdirAll(filepath.Dir(refFile), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(refFile, []byte(commit), 0o644); err != nil {
			return "", err
		}
	}
	return snap, nil
}

func exists(name string, size int64) bool {
	st, err := os.Stat(name)
	return err == nil && st.Mode().IsRegular() && st.Size() == size
}

// revision asks the Hub which commit the revision is at and which files it holds, keeping those
// tiller uses.
func (p *puller) revision(ctx context.Context) (string, []string, error) {
	u := fmt.Sprintf("%s/api/models/%s/revision/%s", p.opts.Endpoint, p.ref.Repo, url.PathEscape(p.ref.Revision))
	ctx, cancel := context.WithTimeout(ctx, p.opts.Stall) // a small answer: all of it within the stall time
	defer cancel()
	resp, err := p.get(ctx, u, nil)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", nil, p.statusError(resp, "")
	}
	var info struct {
		SHA      string `json:"sha"`
		Siblings []struct {
			Name string `json:"rfilename"`
		} `json:"siblings"`
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxInfoBytes+1))
	if err != nil {
		return "", nil, fmt.Errorf("%s: reading %s: %v", p.ref, u, err)
	}
	if len(body) > maxInfoBytes {
		return "", nil, fmt.Errorf("%s: %s answered more than %d MB of file list", p.ref, u, maxInfoBytes>>20)
	}
	if err := json.Unmarshal(body, &info); err != nil {
		return "", nil, fmt.Errorf("%s: %s did not answer the Hub's JSON: %v", p.ref, u, err)
	}
	if !commitHash.MatchString(info.SHA) {
		return "", nil, fmt.Errorf("%s: %s gave the commit %q, not a 40-digit hash", p.ref, u, info.SHA)
	}
	if len(info.Siblings) > maxFiles {
		return "", nil, fmt.Errorf("%s: %s lists %d files, more than %d", p.ref, u, len(info.Siblings), maxFiles)
	}
	var names []string
	weights := false
	for _, s := range info.Siblings {
		if Wanted(s.Name) {
			names = append(names, s.Name)
			weights = weights || strings.HasSuffix(s.Name, ".safetensors")
		}
	}
	if !weights {
		return "", nil, fmt.Errorf("%s has no *.safetensors weights at %s, the only kind tiller reads", p.ref, info.SHA)
	}
	return info.SHA, names, nil
}

var blobName = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})$`)

// head asks the resolve endpoint for one file's commit, ETag, size and location without fetching
// it, as huggingface_hub's get_hf_file_metadata does: redirects within the endpoint (a renamed
// repository) are followed; one to another host (the CDN) is where the bytes are.
func (p *puller) head(ctx context.Context, commit, name string) (remoteFile, error) {
	u := fmt.Sprintf("%s/%s/resolve/%s/%s", p.opts.Endpoint, p.ref.Repo, commit, url.PathEscape(name))
	ctx, cancel := context.WithTimeout(ctx, p.opts.Stall)
	defer cancel()
	for range maxRedirects {
		req, err := p.request(ctx, http.MethodHead, u)
		if err != nil {
			return remoteFile{}, err
		}
		req.Header.Set("Accept-Encoding", "identity")
		resp, err := p.client.Do(req)
		if err != nil {
			return remoteFile{}, fmt.Errorf("%s: %v", p.ref, err)
		}
		resp.Body.Close()
		loc, err := resp.Location()
		redirect := resp.StatusCode >= 300 && resp.StatusCode < 400
		if redirect && err != nil {
			return remoteFile{}, fmt.Errorf("%s: %s: a redirect without a usable Location: %v", p.ref, u, err)
		}
		if redirect && sameHost(loc, p.opts.Endpoint) && resp.Header.Get("X-Linked-Etag") == "" {
			u = loc.String()
			continue
		}
		if !redirect && resp.StatusCode != http.StatusOK {
			return remoteFile{}, p.statusError(resp, name)
		}
		f := remoteFile{name: name, url: u}
		if redirect {
			f.url = loc.String()
		}
		if got := resp.Header.Get("X-Repo-Commit"); got != commit {
			return remoteFile{}, fmt.Errorf("%s: %s: X-Repo-Commit is %q, want %s", p.ref, name, got, commit)
		}
		etag := resp.Header.Get("X-Linked-Etag")
		if etag == "" {
			etag = resp.Header.Get("ETag")
		}
		f.etag = strings.Trim(strings.TrimPrefix(etag, "W/"), `"`)
		if !blobName.MatchString(f.etag) {
			return remoteFile{}, fmt.Errorf("%s: %s: ETag %q is neither a sha256 nor a git sha1", p.ref, name, etag)
		}
		size := resp.Header.Get("X-Linked-Size")
		if size == "" {
			size = resp.Header.Get("Content-Length")
		}
		if f.size, err = strconv.ParseInt(size, 10, 64); err != nil || f.size < 0 {
			return remoteFile{}, fmt.Errorf("%s: %s: no file size (X-Linked-Size or Content-Length %q)", p.ref, name, size)
		}
		return f, nil
	}
	return remoteFile{}, fmt.Errorf("%s: %s: more than %d redirects", p.ref, name, maxRedirects)
}

func sameHost(u *url.URL, endpoint string) bool {
	e, err := url.Parse(endpoint)
	return err == nil && u.Host == e.Host
}

// fetch downloads f into blob unless it is there, holding the lock huggingface_hub takes for the
// same blob (an flock on .locks/models--ORG--NAME/ETAG.lock), so that two pulls, tiller's or
// Python's, never write one file at once.
func (p *puller) fetch(ctx context.Context, f remoteFile, blob string) error {
	if exists(blob, f.size) {
		return nil
	}
	lockDir := filepath.Join(p.opts.Cache, ".locks", filepath.Base(repoFolder(p.opts.Cache, p.ref.Repo)))
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(lockDir, f.etag+".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close() // closing releases the flock
	for waited := false; ; waited = true {
		err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if err != unix.EWOULDBLOCK {
			return fmt.Errorf("%s: locking %s: %v", p.ref, lock.Name(), err)
		}
		if !waited && p.opts.Progress != nil {
			fmt.Fprintf(p.opts.Progress, "pull %s: %s is being downloaded by another process; waiting\n", p.ref, f.name)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if exists(blob, f.size) { // the other process finished it
		return nil
	}
	return p.download(ctx, f, blob)
}

// download fetches f into blob: into blob+".incomplete" first, resuming what an earlier run left
// there, then checks the size and hash and renames it into place.
func (p *puller) download(ctx context.Context, f remoteFile, blob string) error {
	part := blob + ".incomplete"
	out, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	h := newHash(f.etag, f.size)
	have, err := io.Copy(h, out) // hashes what an earlier run wrote, leaving the offset at its end
	if err != nil {
		return fmt.Errorf("%s: %v", part, err)
	}
	restart := func() error {
		have, h = 0, newHash(f.etag, f.size)
		if err := out.Truncate(0); err != nil {
			return err
		}
		_, err := out.Seek(0, io.SeekStart)
		return err
	}
	if have > f.size {
		if err := restart(); err != nil {
			return err
		}
	}
	var rng http.Header
	if have > 0 {
		rng = http.Header{"Range": {fmt.Sprintf("bytes=%d-", have)}}
	}
	// A server that stops sending without closing the connection would hang the pull: the request
	// is cancelled once no byte has come for the stall time (answer headers included).
	reqCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stalled := time.AfterFunc(p.opts.Stall, cancel)
	defer stalled.Stop()
	resp, err := p.follow(reqCtx, f.url, rng)
	if err != nil {
		if ctx.Err() == nil && reqCtx.Err() != nil {
			return fmt.Errorf("%s: %s: no answer for %s; run the same pull again", p.ref, f.name, p.opts.Stall)
		}
		return err
	}
	defer resp.Body.Close()
	body := &watchdog{r: resp.Body, timer: stalled, stall: p.opts.Stall}
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0 && strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", have)):
		p.prog.resumed(have)
	case resp.StatusCode == http.StatusOK: // no range asked, or the server ignored it
		if err := restart(); err != nil {
			return err
		}
	default:
		os.Remove(part)
		return p.statusError(resp, f.name)
	}
	// At most the bytes still missing, plus one to notice a server that sends more.
	n, err := io.CopyBuffer(io.MultiWriter(out, h, p.prog), io.LimitReader(body, f.size-have+1), make([]byte, 1<<20))
	if err != nil {
		if ctx.Err() == nil && reqCtx.Err() != nil {
			err = fmt.Errorf("nothing received for %s", p.opts.Stall)
		}
		return fmt.Errorf("%s: %s: download stopped after %d of %d bytes (%v); run the same pull again to resume", p.ref, f.name, have+n, f.size, err)
	}
	if have+n != f.size {
		os.Remove(part)
		return fmt.Errorf("%s: %s: the server sent %d bytes, the file has %d; deleted the partial download", p.ref, f.name, have+n, f.size)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != f.etag {
		os.Remove(part)
		return fmt.Errorf("%s: %s: the downloaded bytes hash to %s, the Hub says %s; deleted the partial download, run the same pull again", p.ref, f.name, sum, f.etag)
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(part, blob)
}

// watchdog restarts the stall timer whenever bytes arrive.
type watchdog struct {
	r     io.Reader
	timer *time.Timer
	stall time.Duration
}

func (w *watchdog) Read(b []byte) (int, error) {
	n, err := w.r.Read(b)
	if n > 0 {
		w.timer.Reset(w.stall)
	}
	return n, err
}

// newHash is the hash an ETag names: sha256 for LFS files, git's blob sha1 otherwise, which
// hashes "blob SIZE\x00" before the content.
func newHash(etag string, size int64) hash.Hash {
	if len(etag) == 64 {
		return sha256.New()
	}
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", size)
	return h
}

// follow GETs u, following redirects (to the CDN, which gets no token).
func (p *puller) follow(ctx context.Context, u string, extra http.Header) (*http.Response, error) {
	for range maxRedirects {
		resp, err := p.get(ctx, u, extra)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode < 300 || resp.StatusCode >= 400 {
			return resp, nil
		}
		resp.Body.Close()
		loc, err := resp.Location()
		if err != nil {
			return nil, fmt.Errorf("%s: %s: a redirect without a usable Location: %v", p.ref, u, err)
		}
		u = loc.String()
	}
	return nil, fmt.Errorf("%s: %s: more than %d redirects", p.ref, u, maxRedirects)
}

func (p *puller) get(ctx context.Context, u string, extra http.Header) (*http.Response, error) {
	req, err := p.request(ctx, http.MethodGet, u)
	if err != nil {
		return nil, err
	}
	for k, v := range extra {
		req.Header[k] = v
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", p.ref, err)
	}
	return resp, nil
}

// request makes a request with the token, sent only to the endpoint's own host.
func (p *puller) request(ctx context.Context, method, u string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", p.ref, err)
	}
	req.Header.Set("User-Agent", "tiller")
	if p.opts.Token != "" && sameHost(req.URL, p.opts.Endpoint) {
		req.Header.Set("Authorization", "Bearer "+p.opts.Token)
	}
	return req, nil
}

// statusError explains a response other than success, in the Hub's terms where it gives them
// (X-Error-Code: GatedRepo, RepositoryNotFound, RevisionNotFound, EntryNotFound).
func (p *puller) statusError(resp *http.Response, file string) error {
	what := p.ref.String()
	if file != "" {
		what += ": " + file
	}
	msg := resp.Header.Get("X-Error-Message")
	if msg == "" {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
		msg = strings.TrimSpace(string(b))
	}
	if msg != "" {
		msg = " (" + msg + ")"
	}
	page := p.opts.Endpoint + "/" + p.ref.Repo
	token := "no token was sent: set HF_TOKEN, or log in with `huggingface-cli login`"
	if p.opts.Token != "" {
		token = "the token sent (HF_TOKEN or the token file) does not give access"
	}
	code := resp.Header.Get("X-Error-Code")
	switch {
	case code == "GatedRepo" || (code == "" && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden)):
		return fmt.Errorf("%s: the Hub answered %s%s: the model is gated or private; accept its terms at %s and use a token that has access (%s)",
			what, resp.Status, msg, page, token)
	case code == "RepositoryNotFound":
		return fmt.Errorf("%s: the Hub answered %s%s: no such model at %s, or a private one (%s)", what, resp.Status, msg, p.opts.Endpoint, token)
	case code == "RevisionNotFound":
		return fmt.Errorf("%s: the Hub answered %s%s: the model has no revision %q (%s)", what, resp.Status, msg, p.ref.Revision, page)
	}
	return fmt.Errorf("%s: the Hub answered %s%s", what, resp.Status, msg)
}
