package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/tillerlm/tiller/attrib"
)

// The attribution results a server offers read-only: every folder below Config.AttributionDir
// that holds the scores.json of `tiller attribute --out`. Nothing outside that folder is ever
// read: a name is resolved to its real path with every link followed and refused unless that path
// lies inside the folder's real path (a link that stays inside is followed, one that leads out is
// not), and the file is then opened through an os.Root of the folder, which refuses any escape
// should a link change in between; only regular files are read. The work of one request is
// bounded: a listing reads at most attribListDirs folders, attribListEntries directory entries
// and attribHeadBytes of each result's files, to a depth of attribListDepth; a read streams one
// scores.json of at most Config.MaxAttributionBytes.
//
//	GET /v1/attributions         the results, each with its run's description and locus ("folder":
//	                             null and no results when the server has no attributions folder)
//	GET /v1/attributions/NAME    one result's scores.json, as tiller attribute wrote it
var (
	// The folders and directory entries one listing reads at most (variables for the tests).
	attribListDirs    = 256
	attribListEntries = 8192
)

const (
	attribListDepth   = 4
	attribListResults = 256
	attribHeadBytes   = 64 << 10
	// defaultMaxAttributionBytes bounds one scores.json: a Llama-3.1-8B run over 40 pairs of 60
	// tokens, head_pos nodes included, writes about 30 MB.
	defaultMaxAttributionBytes = 128 << 20
)

// attributionInfo is one result as GET /v1/attributions lists it. Name is the result's folder
// relative to the configured folder, led by that folder's own name ("demo/attribution"), so that
// a result in the configured folder itself has a name too.
type attributionInfo struct {
	Name     string `json:"name"`
	Object   string `json:"object"`
	Modified int64  `json:"modified"` // scores.json's modification time, Unix seconds
	Bytes    int64  `json:"bytes"`    // scores.json's size
	// From the head of scores.json (see attrib.Result.WriteJSON), where readable.
	Model     string   `json:"model,omitempty"`
	Pairs     string   `json:"pairs,omitempty"`
	Metric    string   `json:"metric,omitempty"`
	NPairs    int      `json:"n_pairs,omitempty"`
	Layers    int      `json:"layers,omitempty"`
	Positions int      `json:"positions,omitempty"`
	Kinds     []string `json:"node_kinds,omitempty"`
	// From locus.json beside it, where there is one.
	Locus *attrib.Locus `json:"locus,omitempty"`
	Error string        `json:"error,omitempty"` // why a part of the result could not be read
}

// attributionRoot is the configured folder's name in result names.
func (s *Server) attributionRoot() string {
	abs, err := filepath.Abs(s.cfg.AttributionDir)
	if err != nil {
		abs = s.cfg.AttributionDir
	}
	name := filepath.Base(abs)
	if name == string(filepath.Separator) || name == "." || name == "" {
		return "attributions"
	}
	return name
}

// openResultFile opens a regular file inside the attributions folder without following a link
// out of it and without blocking on a FIFO or device planted there.
func (s *Server) openResultFile(root *os.Root, name string) (*os.File, fs.FileInfo, error) {
	_, rel, err := confine(s.cfg.AttributionDir, name, "attributions folder")
	if err != nil {
		return nil, nil, err
	}
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", name)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, st, nil
}

// openAttributions opens the attributions folder as the root every read goes through, or answers
// the request with why it cannot.
func (s *Server) openAttributions(w http.ResponseWriter) (*os.Root, bool) {
	root, err := os.OpenRoot(s.cfg.AttributionDir)
	if err != nil {
		s.fail(w, fmt.Errorf("the attributions folder: %w", err))
		return nil, false
	}
	return root, true
}

func (s *Server) listAttributions(w http.ResponseWriter, r *http.Request) {
	if s.cfg.AttributionDir == "" {
		writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []attributionInfo{}, "folder": nil, "truncated": false})
		return
	}
	root, ok := s.openAttributions(w)
	if !ok {
		return
	}
	defer root.Close()
	type dir struct {
		rel   string // slash-separated, "." for the root: the result's name
		real  string // the folder it resolves to inside the root
		depth int
	}
	out := []attributionInfo{}
	truncated := false
	entries := 0
	queue := []dir{{".", ".", 0}}
	for visited := 0; len(queue) > 0; visited++ {
		if visited == attribListDirs || len(out) == attribListResults {
			truncated = true
			break
		}
		d := queue[0]
		queue = queue[1:]
		if info, ok := s.describeResult(root, d.rel, d.real); ok {
			out = append(out, info)
		}
		if entries == attribListEntries {
			truncated = true
			break
		}
		f, err := root.Open(d.real)
		if err != nil {
			continue
		}
		list, err := f.ReadDir(attribListEntries - entries) // n > 0: at most n entries
		f.Close()
		if err != nil && !errors.Is(err, io.EOF) {
			continue
		}
		entries += len(list)
		slices.SortFunc(list, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
		for _, e := range list {
			if strings.HasPrefix(e.Name(), ".") || d.depth+1 > attribListDepth {
				continue
			}
			child := dir{path.Join(d.rel, e.Name()), path.Join(d.real, e.Name()), d.depth + 1}
			if e.Type()&fs.ModeSymlink != 0 {
				// A link to a folder inside the root is followed; one that leads out is skipped.
				_, real, err := confine(s.cfg.AttributionDir, child.real, "attributions folder")
				if err != nil {
					continue
				}
				if st, err := root.Stat(real); err != nil || !st.IsDir() {
					continue
				}
				child.real = real
			} else if !e.IsDir() {
				continue
			}
			queue = append(queue, child)
		}
	}
	if len(queue) > 0 {
		truncated = true
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": out, "folder": s.attributionRoot(), "truncated": truncated})
}

// describeResult reads what a listing shows of the result named rel in folder real, if it holds one.
func (s *Server) describeResult(root *os.Root, rel, real string) (attributionInfo, bool) {
	f, st, err := s.openResultFile(root, path.Join(real, "scores.json"))
	if err != nil {
		return attributionInfo{}, false
	}
	defer f.Close()
	name := s.attributionRoot()
	if rel != "." {
		name += "/" + rel
	}
	info := attributionInfo{Name: name, Object: "attribution", Modified: st.ModTime().Unix(), Bytes: st.Size()}
	var errs []string
	if err := readHead(f, &info); err != nil {
		errs = append(errs, fmt.Sprintf("scores.json: %v", err))
	}
	if lf, _, err := s.openResultFile(root, path.Join(real, "locus.json")); err == nil {
		var loc attrib.Locus
		if err := json.NewDecoder(io.LimitReader(lf, attribHeadBytes)).Decode(&loc); err != nil {
			errs = append(errs, fmt.Sprintf("locus.json: %v", err))
		} else {
			info.Locus = &loc
		}
		lf.Close()
	}
	info.Error = strings.Join(errs, "; ")
	return info, true
}

// readHead fills info from the fields scores.json writes before its grids, reading no further
// than the grids ("mean") or attribHeadBytes.
func readHead(r io.Reader, info *attributionInfo) error {
	d := json.NewDecoder(io.LimitReader(r, attribHeadBytes))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return errors.New("not a JSON object")
	}
	fields := map[string]any{"model": &info.Model, "pairs": &info.Pairs, "metric": &info.Metric, "n_pairs": &info.NPairs,
		"layers": &info.Layers, "positions": &info.Positions, "node_kinds": &info.Kinds}
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return err
		}
		key, _ := t.(string)
		if key == "mean" {
			return nil
		}
		dst, ok := fields[key]
		if !ok {
			dst = new(json.RawMessage)
		}
		if err := d.Decode(dst); err != nil {
			return fmt.Errorf("field %q: %v", key, err)
		}
	}
	return nil
}

// readAttribution answers GET /v1/attributions/NAME with NAME's scores.json.
func (s *Server) readAttribution(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/v1/attributions/")
	if s.cfg.AttributionDir == "" {
		writeError(w, &failure{http.StatusNotFound, "not_found_error", "not_found", "name", "this server offers no attribution results (tiller serve --attributions DIR)"})
		return
	}
	rel, ok := s.resultPath(name)
	if !ok {
		writeError(w, &failure{http.StatusNotFound, "not_found_error", "not_found", "name",
			fmt.Sprintf("%q: no such attribution result (GET /v1/attributions lists them; names begin with %q)", name, s.attributionRoot()+"/")})
		return
	}
	root, ok := s.openAttributions(w)
	if !ok {
		return
	}
	defer root.Close()
	f, st, err := s.openResultFile(root, path.Join(rel, "scores.json"))
	if err != nil {
		s.logf("GET /v1/attributions/%s: %v", name, err)
		writeError(w, &failure{http.StatusNotFound, "not_found_error", "not_found", "name", fmt.Sprintf("%q: no readable scores.json inside the attributions folder (the server log says why)", name)})
		return
	}
	defer f.Close()
	if limit := s.maxAttributionBytes(); st.Size() > limit {
		writeError(w, &failure{http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large", "name",
			fmt.Sprintf("%q: scores.json is %d bytes, over the server's limit of %d", name, st.Size(), limit)})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	http.ServeContent(w, r, "scores.json", st.ModTime(), io.NewSectionReader(f, 0, st.Size()))
}

// resultPath maps a result name to its folder inside the attributions folder: the root's own
// name, then a local slash-separated path (no "..", no empty or dot segments).
func (s *Server) resultPath(name string) (string, bool) {
	first, rest, sub := strings.Cut(name, "/")
	if first != s.attributionRoot() || strings.ContainsAny(name, "\\\x00") {
		return "", false
	}
	if !sub {
		return ".", true
	}
	for _, seg := range strings.Split(rest, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", false
		}
	}
	return rest, filepath.IsLocal(filepath.FromSlash(rest))
}

func (s *Server) maxAttributionBytes() int64 {
	if s.cfg.MaxAttributionBytes > 0 {
		return s.cfg.MaxAttributionBytes
	}
	return defaultMaxAttributionBytes
}
