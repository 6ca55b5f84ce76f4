package hub_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tillerlm/tiller/llama/hub"
	"github.com/tillerlm/tiller/llama/hub/hubtest"
)

const repo = "TestOrg/Tiny-Llama_1.5"

// repoFiles is a model repository as the Hub holds one: what tiller uses, and what it must leave.
func repoFiles() map[string][]byte {
	weights := make([]byte, 300_000)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range weights {
		weights[i] = byte(rng.Uint32())
	}
	return map[string][]byte{
		"config.json":                  []byte(`{"model_type": "llama"}`),
		"generation_config.json":       []byte(`{"eos_token_id": 2}`),
		"tokenizer.json":               []byte(`{"version": "1.0"}`),
		"tokenizer_config.json":        []byte(`{"chat_template": "{{ messages }}"}`),
		"model.safetensors":            weights,
		"pytorch_model.bin":            []byte("pickle"),
		"original/consolidated.00.pth": []byte("pickle"),
		"README.md":                    []byte("# model card"),
	}
}

func pullOpts(s *hubtest.Server, cache string) hub.Options {
	return hub.Options{Endpoint: s.Hub.URL, Cache: cache}
}

func mustPull(t *testing.T, s *hubtest.Server, cache string, ref hub.Ref) string {
	t.Helper()
	dir, err := hub.Pull(context.Background(), ref, pullOpts(s, cache))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestPullWritesHuggingFaceLayout(t *testing.T) {
	s := hubtest.New(t, repo, repoFiles(), "model.safetensors")
	cache := t.TempDir()
	dir := mustPull(t, s, cache, hub.Ref{repo, "main"})

	folder := filepath.Join(cache, "models--TestOrg--Tiny-Llama_1.5")
	if want := filepath.Join(folder, "snapshots", s.Commit); dir != want {
		t.Errorf("snapshot folder %s, want %s", dir, want)
	}
	if b, err := os.ReadFile(filepath.Join(folder, "refs", "main")); err != nil || string(b) != s.Commit {
		t.Errorf("refs/main = %q, %v; want %s", b, err, s.Commit)
	}
	for name, body := range s.Files {
		link := filepath.Join(dir, name)
		if !hub.Wanted(name) {
			if _, err := os.Lstat(link); err == nil {
				t.Errorf("%s was pulled; tiller does not use it", name)
			}
			if s.Requested(name) {
				t.Errorf("%s was requested from the Hub", name)
			}
			continue
		}
		target, err := os.Readlink(link)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		etag := s.GitSHA1(name)
		if s.LFS[name] {
			etag = s.SHA256(name)
		}
		if want := "../../blobs/" + etag; target != want {
			t.Errorf("%s links to %s, want %s", name, target, want)
		}
		if got, err := os.ReadFile(link); err != nil || !bytes.Equal(got, body) {
			t.Errorf("%s: content differs from the Hub's (%v)", name, err)
		}
	}
	if got, err := hub.Resolve(cache, hub.Ref{repo, "main"}); err != nil || got != dir {
		t.Errorf("Resolve after pull = %s, %v; want %s", got, err, dir)
	}
	if got, err := hub.Resolve(cache, hub.Ref{repo, s.Commit}); err != nil || got != dir {
		t.Errorf("Resolve by commit = %s, %v; want %s", got, err, dir)
	}
	if s.Auth("hub")+s.Auth("cdn") != 0 {
		t.Errorf("an Authorization header was sent without a token: %v", s.Auth("hub"))
	}
}

func TestPullAgainFetchesNothing(t *testing.T) {
	s := hubtest.New(t, repo, repoFiles(), "model.safetensors")
	cache := t.TempDir()
	mustPull(t, s, cache, hub.Ref{repo, "main"})
	before := s.Served("model.safetensors")
	var progress bytes.Buffer
	opts := pullOpts(s, cache)
	opts.Progress = &progress
	if _, err := hub.Pull(context.Background(), hub.Ref{repo, "main"}, opts); err != nil {
		t.Fatal(err)
	}
	if s.Served("model.safetensors") != before {
		t.Errorf("the second pull fetched the weights again")
	}
	if !strings.Contains(progress.String(), "already in the cache") {
		t.Errorf("progress of a pull with nothing to do: %q", progress.String())
	}
}

func TestPullResumesAnInterruptedDownload(t *testing.T) {
	s := hubtest.New(t, repo, repoFiles(), "model.safetensors")
	cache := t.TempDir()
	const cut = 123_457
	s.CutAfter["model.safetensors"] = cut
	_, err := hub.Pull(context.Background(), hub.Ref{repo, "main"}, pullOpts(s, cache))
	if err == nil || !strings.Contains(err.Error(), "resume") {
		t.Fatalf("an interrupted download gave %v, want an error saying it resumes", err)
	}
	part := filepath.Join(cache, "models--TestOrg--Tiny-Llama_1.5", "blobs", s.SHA256("model.safetensors")+".incomplete")
	if st, err := os.Stat(part); err != nil || st.Size() != cut {
		t.Fatalf("partial blob after the cut: %v, %v; want %d bytes", st, err, cut)
	}
	var progress bytes.Buffer
	opts := pullOpts(s, cache)
	opts.Progress = &progress
	dir, err := hub.Pull(context.Background(), hub.Ref{repo, "main"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "model.safetensors")); !bytes.Equal(got, s.Files["model.safetensors"]) {
		t.Error("the resumed file differs from the Hub's")
	}
	if want := "bytes=123457-"; len(s.Ranges()) != 1 || s.Ranges()[0] != want {
		t.Errorf("Range headers %q, want one %q", s.Ranges(), want)
	}
	if n, want := s.Served("model.safetensors"), int64(len(s.Files["model.safetensors"])); n != want {
		t.Errorf("the CDN sent %d bytes of the weights over both runs, want %d (nothing twice)", n, want)
	}
	if _, err := os.Stat(part); !os.IsNotExist(err) {
		t.Errorf("the .incomplete file is still there: %v", err)
	}
	if !strings.Contains(progress.String(), "/s") {
		t.Errorf("no speed in the progress line %q", progress.String())
	}
}

func TestPullRestartsWhenTheServerIgnoresRange(t *testing.T) {
	s := hubtest.New(t, repo, repoFiles(), "model.safetensors")
	cache := t.TempDir()
	s.CutAfter["model.safetensors"] = 1000
	if _, err := hub.Pull(context.Background(), hub.Ref{repo, "main"}, pullOpts(s, cache)); err == nil {
		t.Fatal("no error from a dropped connection")
	}
	s.IgnoreRange = true
	dir := mustPull(t, s, cache, hub.Ref{repo, "main"})
	if got, _ := os.ReadFile(filepath.Join(dir, "model.safetensors")); !bytes.Equal(got, s.Files["model.safetensors"]) {
		t.Error("after a 200 answer to a Range request the file differs from the Hub's")
	}
}

func TestPullRejectsBadContent(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(s *hubtest.Server)
		file  string
		want  string
	}{
		{"corrupt LFS file", func(s *hubtest.Server) { s.Corrupt["model.safetensors"] = true }, "model.safetensors", "hash to"},
		{"corrupt small file", func(s *hubtest.Server) { s.Corrupt["config.json"] = true }, "config.json", "hash to"},
		{"too many bytes", func(s *hubtest.Server) { s.Extra["model.safetensors"] = true }, "model.safetensors", "sent 300001 bytes"},
		{"path in the ETag", func(s *hubtest.Server) { s.ETag["model.safetensors"] = "../../../../evil" }, "", "neither a sha256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := hubtest.New(t, repo, repoFiles(), "model.safetensors")
			tc.fault(s)
			cache := t.TempDir()
			_, err := hub.Pull(context.Background(), hub.Ref{repo, "main"}, pullOpts(s, cache))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
			if tc.file != "" && !strings.Contains(err.Error(), tc.file) || tc.file != "" && tc.want == "hash to" && !strings.Contains(err.Error(), "deleted the partial download") {
				t.Errorf("error %q does not name %s and say the partial file was deleted", err, tc.file)
			}
			blobs, _ := filepath.Glob(filepath.Join(cache, "models--*", "blobs", "*"))
			for _, b := range blobs {
				if strings.HasSuffix(b, ".incomplete") {
					t.Errorf("a partial blob was left: %s", b)
				}
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(cache), "evil")); err == nil {
				t.Error("a file was written outside the cache")
			}
		})
	}
}

func TestPullGatedModel(t *testing.T) {
	s := hubtest.New(t, repo, repoFiles(), "model.safetensors")
	s.Token = "hf_secret"
	cache := t.TempDir()
	_, err := hub.Pull(context.Background(), hub.Ref{repo, "main"}, pullOpts(s, cache))
	if err == nil {
		t.Fatal("pulled a gated model without a token")
	}
	for _, want := range []string{"401", "HF_TOKEN", s.Hub.URL + "/" + repo, "gated"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	opts := pullOpts(s, cache)
	opts.Token = "hf_wrong"
	if _, err := hub.Pull(context.Background(), hub.Ref{repo, "main"}, opts); err == nil || !strings.Contains(err.Error(), "does not give access") {
		t.Errorf("a refused token gave %v", err)
	}
	opts.Token = s.Token
	if _, err := hub.Pull(context.Background(), hub.Ref{repo, "main"}, opts); err != nil {
		t.Fatal(err)
	}
	if s.Auth("cdn") != 0 {
		t.Errorf("the token was sent to the CDN (%d requests)", s.Auth("cdn"))
	}
}

func TestPullErrors(t *testing.T) {
	s := hubtest.New(t, repo, repoFiles(), "model.safetensors")
	_, err := hub.Pull(context.Background(), hub.Ref{repo, "v9"}, pullOpts(s, t.TempDir()))
	if err == nil || !strings.Contains(err.Error(), `no revision "v9"`) {
		t.Errorf("unknown revision: %v", err)
	}
	noWeights := repoFiles()
	delete(noWeights, "model.safetensors")
	s2 := hubtest.New(t, repo, noWeights)
	_, err = hub.Pull(context.Background(), hub.Ref{repo, "main"}, pullOpts(s2, t.TempDir()))
	if err == nil || !strings.Contains(err.Error(), "no *.safetensors") {
		t.Errorf("a repository with only pickled weights: %v", err)
	}
	if _, err := hub.Pull(context.Background(), hub.Ref{"org/name", "../../../x"}, pullOpts(s, t.TempDir())); err == nil {
		t.Error("a revision that climbs out of refs/ was pulled")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := hub.Pull(ctx, hub.Ref{repo, "main"}, pullOpts(s, t.TempDir())); !errors.Is(err, context.Canceled) && (err == nil || !strings.Contains(err.Error(), "canceled")) {
		t.Errorf("a cancelled pull: %v", err)
	}
}

func TestResolve(t *testing.T) {
	cache := t.TempDir()
	commit := strings.Repeat("ab", 20)
	folder := filepath.Join(cache, "models--org--name")
	os.MkdirAll(filepath.Join(folder, "snapshots", commit), 0o755)
	os.MkdirAll(filepath.Join(folder, "refs", "refs", "pr"), 0o755)
	os.WriteFile(filepath.Join(folder, "refs", "main"), []byte(commit+"\n"), 0o644)
	os.WriteFile(filepath.Join(folder, "refs", "refs", "pr", "1"), []byte(commit), 0o644)
	os.WriteFile(filepath.Join(folder, "refs", "broken"), []byte("not-a-hash"), 0o644)
	want := filepath.Join(folder, "snapshots", commit)
	for _, rev := range []string{"main", "refs/pr/1", commit} {
		if got, err := hub.Resolve(cache, hub.Ref{"org/name", rev}); err != nil || got != want {
			t.Errorf("Resolve(org/name@%s) = %s, %v; want %s", rev, got, err, want)
		}
	}
	for _, tc := range []struct {
		ref  hub.Ref
		want string
	}{
		{hub.Ref{"org/other", "main"}, "tiller pull org/other"},
		{hub.Ref{"org/name", "v2"}, "tiller pull org/name@v2"},
		{hub.Ref{"org/name", strings.Repeat("cd", 20)}, "not in the Hugging Face cache"},
		{hub.Ref{"org/name", "broken"}, "not a commit hash"},
	} {
		_, err := hub.Resolve(cache, tc.ref)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Resolve(%s): %v, want an error with %q", tc.ref, err, tc.want)
		}
	}
}

func TestCacheDirAndToken(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HF_HUB_CACHE", "")
	t.Setenv("HUGGINGFACE_HUB_CACHE", "")
	t.Setenv("HF_HOME", "")
	t.Setenv("HF_TOKEN", "")
	t.Setenv("HUGGING_FACE_HUB_TOKEN", "")
	t.Setenv("HF_TOKEN_PATH", "")
	if got, want := hub.CacheDir(), filepath.Join(home, ".cache", "huggingface", "hub"); got != want {
		t.Errorf("default cache %s, want %s", got, want)
	}
	if hub.Token() != "" {
		t.Error("a token without HF_TOKEN or a token file")
	}
	os.MkdirAll(filepath.Join(home, ".cache", "huggingface"), 0o755)
	os.WriteFile(filepath.Join(home, ".cache", "huggingface", "token"), []byte("hf_fromfile\n"), 0o600)
	if got := hub.Token(); got != "hf_fromfile" {
		t.Errorf("token from ~/.cache/huggingface/token: %q", got)
	}
	t.Setenv("HF_HOME", filepath.Join(home, "hfhome"))
	if got, want := hub.CacheDir(), filepath.Join(home, "hfhome", "hub"); got != want {
		t.Errorf("with HF_HOME: %s, want %s", got, want)
	}
	if hub.Token() != "" {
		t.Error("the token file is read from HF_HOME, which has none")
	}
	t.Setenv("HF_TOKEN", "hf_env")
	if got := hub.Token(); got != "hf_env" {
		t.Errorf("HF_TOKEN: %q", got)
	}
	t.Setenv("HF_HUB_CACHE", "~/elsewhere")
	if got, want := hub.CacheDir(), filepath.Join(home, "elsewhere"); got != want {
		t.Errorf("with HF_HUB_CACHE: %s, want %s", got, want)
	}
}

func TestParseRef(t *testing.T) {
	for in, want := range map[string]hub.Ref{
		"HuggingFaceTB/SmolLM2-135M-Instruct":        {"HuggingFaceTB/SmolLM2-135M-Instruct", "main"},
		"meta-llama/Llama-3.1-8B-Instruct@refs/pr/3": {"meta-llama/Llama-3.1-8B-Instruct", "refs/pr/3"},
		"org/name@v1.0": {"org/name", "v1.0"},
	} {
		if got, ok := hub.ParseRef(in); !ok || got != want {
			t.Errorf("ParseRef(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "name", "org/", "/abs/path", "a/b/c", "./org/name", "../x/y", "org/name@", "org/name@../../x",
		"org/na--me", "org/name.", "org/-name", "model.gguf", "org/name@a//b"} {
		if got, ok := hub.ParseRef(in); ok {
			t.Errorf("ParseRef(%q) = %v, want no ref", in, got)
		}
	}
}

// TestPullWaitsForTheLock: a blob whose lock another process (here: this one, as huggingface_hub
// would) holds is not written until the lock is released.
func TestPullWaitsForTheLock(t *testing.T) {
	s := hubtest.New(t, repo, repoFiles(), "model.safetensors")
	cache := t.TempDir()
	lockDir := filepath.Join(cache, ".locks", "models--TestOrg--Tiny-Llama_1.5")
	os.MkdirAll(lockDir, 0o755)
	lock, err := os.Create(filepath.Join(lockDir, s.SHA256("model.safetensors")+".lock"))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	var progress syncBuffer
	opts := pullOpts(s, cache)
	opts.Progress = &progress
	done := make(chan error)
	go func() {
		_, err := hub.Pull(context.Background(), hub.Ref{repo, "main"}, opts)
		done <- err
	}()
	for !strings.Contains(progress.String(), "waiting") {
		select {
		case err := <-done:
			t.Fatalf("the pull ended (%v) while another process held the lock", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if n := s.Served("model.safetensors"); n != 0 {
		t.Errorf("%d bytes of the locked blob were fetched", n)
	}
	lock.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := s.Served("model.safetensors"); n != int64(len(s.Files["model.safetensors"])) {
		t.Errorf("after the lock was released, %d bytes were fetched", n)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader on two goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestPullGivesUpOnASilentServer: a server that stops sending without closing the connection
// fails the pull after the stall time, leaving what came for the next run to resume.
func TestPullGivesUpOnASilentServer(t *testing.T) {
	s := hubtest.New(t, repo, repoFiles(), "model.safetensors")
	s.StallAfter["model.safetensors"] = 5000
	cache := t.TempDir()
	opts := pullOpts(s, cache)
	opts.Stall = 200 * time.Millisecond
	_, err := hub.Pull(context.Background(), hub.Ref{repo, "main"}, opts)
	if err == nil || !strings.Contains(err.Error(), "nothing received for 200ms") || !strings.Contains(err.Error(), "resume") {
		t.Fatalf("a silent server: %v", err)
	}
	dir := mustPull(t, s, cache, hub.Ref{repo, "main"})
	if got, _ := os.ReadFile(filepath.Join(dir, "model.safetensors")); !bytes.Equal(got, s.Files["model.safetensors"]) {
		t.Error("the file resumed after a stall differs from the Hub's")
	}
	if want := "bytes=5000-"; len(s.Ranges()) != 1 || s.Ranges()[0] != want {
		t.Errorf("Range headers %q, want one %q", s.Ranges(), want)
	}
}
