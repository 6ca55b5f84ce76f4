// Package hubtest is a local stand-in of the Hugging Face Hub's HTTP API for tests, as
// net/http/httptest is for servers: no test of tiller reaches the network.
package hubtest

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server is a local stand-in of the Hub's HTTP API, as huggingface_hub uses it: the revision
// endpoint, HEAD and GET on resolve (small files served there with their git sha1 ETag, LFS files
// redirected to a separate CDN server with X-Linked-Etag/X-Linked-Size), Range requests, gated
// access, and faults on demand.
type Server struct {
	Repo   string            // ORG/NAME
	Commit string            // the one commit, which "main" points at
	Files  map[string][]byte // the repository's files by path
	LFS    map[string]bool   // files served as LFS (sha256 ETag, redirect to the CDN)
	Token  string            // when set, every request to the Hub must carry it (a gated model)

	// Faults, set before a request.
	CutAfter    map[string]int    // the next GET of a file sends this many bytes, then drops the connection
	StallAfter  map[string]int    // the next GET of a file sends this many bytes, then sends nothing more
	Corrupt     map[string]bool   // serve these with one byte flipped
	Extra       map[string]bool   // serve these with a byte too many
	IgnoreRange bool              // answer 200 with the whole file to a Range request
	ETag        map[string]string // an LFS file's X-Linked-Etag, instead of its sha256

	Hub, CDN *httptest.Server // HF_ENDPOINT is Hub.URL

	mu     sync.Mutex
	log    []string         // "HEAD /org/name/resolve/…", "GET cdn /…"
	ranges []string         // Range headers seen
	auth   map[string]int   // Authorization headers seen at "hub" and "cdn"
	served map[string]int64 // body bytes sent per file
}

// New starts a Hub holding one repository, whose files named in lfs are LFS files, and closes it
// when the test ends.
func New(t testing.TB, repo string, files map[string][]byte, lfs ...string) *Server {
	t.Helper()
	s := &Server{
		Repo: repo, Files: files, LFS: map[string]bool{},
		Commit:   fmt.Sprintf("%040x", sha1.Sum([]byte(repo))),
		CutAfter: map[string]int{}, StallAfter: map[string]int{}, Corrupt: map[string]bool{}, Extra: map[string]bool{}, ETag: map[string]string{},
		auth: map[string]int{}, served: map[string]int64{},
	}
	for _, f := range lfs {
		s.LFS[f] = true
	}
	s.Hub = httptest.NewServer(http.HandlerFunc(s.serveHub))
	s.CDN = httptest.NewServer(http.HandlerFunc(s.serveCDN))
	t.Cleanup(s.Hub.Close)
	t.Cleanup(s.CDN.Close)
	return s
}

func (s *Server) record(where string, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = append(s.log, r.Method+" "+where+" "+r.URL.Path)
	if rg := r.Header.Get("Range"); rg != "" {
		s.ranges = append(s.ranges, rg)
	}
	if r.Header.Get("Authorization") != "" {
		s.auth[where]++
	}
}

// SHA256 is a file's sha256, the ETag of an LFS file.
func (s *Server) SHA256(name string) string {
	sum := sha256.Sum256(s.Files[name])
	return hex.EncodeToString(sum[:])
}

// GitSHA1 is a file's git blob hash, the ETag of a small file.
func (s *Server) GitSHA1(name string) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(s.Files[name]))
	h.Write(s.Files[name])
	return hex.EncodeToString(h.Sum(nil))
}

func (s *Server) serveHub(w http.ResponseWriter, r *http.Request) {
	s.record("hub", r)
	if s.Token != "" && r.Header.Get("Authorization") != "Bearer "+s.Token {
		w.Header().Set("X-Error-Code", "GatedRepo")
		w.Header().Set("X-Error-Message", "Access to model "+s.Repo+" is restricted.")
		http.Error(w, "gated", http.StatusUnauthorized)
		return
	}
	if rev, ok := strings.CutPrefix(r.URL.Path, "/api/models/"+s.Repo+"/revision/"); ok {
		if rev != "main" && rev != s.Commit {
			w.Header().Set("X-Error-Code", "RevisionNotFound")
			http.Error(w, "no revision", http.StatusNotFound)
			return
		}
		type sibling struct {
			Name string `json:"rfilename"`
		}
		info := struct {
			ID       string    `json:"id"`
			SHA      string    `json:"sha"`
			Siblings []sibling `json:"siblings"`
		}{ID: s.Repo, SHA: s.Commit}
		for name := range s.Files {
			info.Siblings = append(info.Siblings, sibling{name})
		}
		json.NewEncoder(w).Encode(info)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/"+s.Repo+"/resolve/")
	rev, name, _ := strings.Cut(rest, "/")
	body, found := s.Files[name]
	if !ok || !found || (rev != "main" && rev != s.Commit) {
		w.Header().Set("X-Error-Code", "EntryNotFound")
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	w.Header().Set("X-Repo-Commit", s.Commit)
	if s.LFS[name] {
		etag := s.SHA256(name)
		if e, ok := s.ETag[name]; ok {
			etag = e
		}
		w.Header().Set("X-Linked-Etag", `"`+etag+`"`)
		w.Header().Set("X-Linked-Size", fmt.Sprint(len(body)))
		http.Redirect(w, r, s.CDN.URL+"/blob/"+name, http.StatusFound)
		return
	}
	w.Header().Set("ETag", `"`+s.GitSHA1(name)+`"`)
	s.send(w, r, name)
}

func (s *Server) serveCDN(w http.ResponseWriter, r *http.Request) {
	s.record("cdn", r)
	name, ok := strings.CutPrefix(r.URL.Path, "/blob/")
	if _, found := s.Files[name]; !ok || !found {
		http.NotFound(w, r)
		return
	}
	s.send(w, r, name)
}

// send serves a file's bytes, honouring Range unless told not to, with the faults asked for.
func (s *Server) send(w http.ResponseWriter, r *http.Request, name string) {
	body := s.Files[name]
	if s.Corrupt[name] {
		body = bytes.Clone(body)
		body[len(body)/2] ^= 1
	}
	if s.Extra[name] {
		body = append(bytes.Clone(body), '!')
	}
	if s.IgnoreRange {
		r.Header.Del("Range")
	}
	if r.Method == http.MethodGet {
		s.mu.Lock()
		cut, cuts := s.CutAfter[name]
		stall, stalls := s.StallAfter[name]
		delete(s.CutAfter, name)
		delete(s.StallAfter, name)
		s.mu.Unlock()
		if cuts || stalls {
			if stalls {
				cut = stall
			}
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.WriteHeader(http.StatusOK)
			w.Write(body[:cut])
			s.count(name, cut)
			w.(http.Flusher).Flush()
			if stalls {
				<-r.Context().Done() // silent until the client gives up
			}
			panic(http.ErrAbortHandler) // drops the connection mid-body
		}
	}
	cw := &countingWriter{ResponseWriter: w}
	http.ServeContent(cw, r, name, time.Time{}, bytes.NewReader(body))
	s.count(name, cw.n)
}

func (s *Server) count(name string, n int) {
	s.mu.Lock()
	s.served[name] += int64(n)
	s.mu.Unlock()
}

type countingWriter struct {
	http.ResponseWriter
	n int
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += n
	return n, err
}

// Requested says whether any request's path mentions name.
func (s *Server) Requested(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.log {
		if strings.HasSuffix(l, "/"+name) {
			return true
		}
	}
	return false
}

// Ranges are the Range headers the Hub and the CDN saw.
func (s *Server) Ranges() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...)
}

// Auth counts the requests with an Authorization header at "hub" or "cdn".
func (s *Server) Auth(where string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.auth[where]
}

// Served is the count of a file's body bytes sent so far.
func (s *Server) Served(name string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served[name]
}
