package server

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

// The workbench page (ui/): an attribution explorer and a steering playground, plain JavaScript
// and SVG, embedded in the binary so that nothing is fetched at run time. The page holds no data:
// everything it shows comes from the API it calls (chat completions with steering, /v1/vectors,
// /v1/scores, /v1/attributions), through Server.ServeHTTP with all its checks.
//
//go:embed ui
var uiFiles embed.FS

// uiPolicy lets the page load only its own files and talk only to its own server, and forbids
// framing it into another site.
const uiPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// WithUI serves the workbench page under /ui/ (and redirects / there) in front of api, which
// answers every other path. The page's files are public, as the binary that holds them is: they
// need no API key, while every API call the page makes sends the key, which the page asks for
// when the server answers 401.
func WithUI(api http.Handler) http.Handler {
	sub, err := fs.Sub(uiFiles, "ui")
	if err != nil {
		panic("server: the embedded ui folder: " + err.Error())
	}
	files := http.StripPrefix("/ui/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if p != "/" && p != "/ui" && !strings.HasPrefix(p, "/ui/") {
			api.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, &failure{http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed", "", r.Method + " " + p + ": the page takes GET"})
			return
		}
		if p == "/" || p == "/ui" {
			http.Redirect(w, r, "/ui/", http.StatusFound)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", uiPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
