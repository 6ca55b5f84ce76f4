// Package hub finds models in the Hugging Face cache and fills that cache from the Hub, laid out
// exactly as huggingface_hub lays it out, so that tiller, transformers and huggingface_hub share
// one copy of every model.
//
// The cache (huggingface_hub's "hub" folder) holds, per model:
//
//	models--ORG--NAME/
//	    blobs/ETAG                     the files' bytes, named by their ETag (sha256 for LFS files,
//	                                   the git blob sha1 for small ones)
//	    snapshots/COMMIT/FILE          relative links to ../../blobs/ETAG, one folder per commit
//	    refs/REVISION                  the commit a branch or tag (main, v1.0, refs/pr/1) pointed at
package hub

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Ref names a model on the Hub: a repository ORG/NAME and a revision (branch, tag or commit).
type Ref struct {
	Repo     string // "HuggingFaceTB/SmolLM2-135M-Instruct"
	Revision string // "main" unless given
}

func (r Ref) String() string {
	if r.Revision == "main" {
		return r.Repo
	}
	return r.Repo + "@" + r.Revision
}

// The Hub's rules for a repository id's two parts: letters, digits, '-', '_', '.', not starting
// or ending with '-' or '.', no "--" or "..".
var repoPart = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9_])?$`)

// ParseRef reads ORG/NAME[@REVISION]. It reports false for anything else, which lets callers try
// the text as a path first.
func ParseRef(s string) (Ref, bool) {
	repo, rev, hasRev := strings.Cut(s, "@")
	if !hasRev {
		rev = "main"
	}
	org, name, ok := strings.Cut(repo, "/")
	if !ok || !repoPart.MatchString(org) || !repoPart.MatchString(name) ||
		strings.Contains(repo, "--") || strings.Contains(repo, "..") {
		return Ref{}, false
	}
	if !validRevision(rev) {
		return Ref{}, false
	}
	return Ref{Repo: repo, Revision: rev}, true
}

// validRevision accepts branch, tag and commit names, refs/pr/N included, but nothing that could
// leave the refs folder when used as a path.
func validRevision(rev string) bool {
	if rev == "" || strings.HasPrefix(rev, "/") || strings.ContainsAny(rev, "\\\x00") {
		return false
	}
	for _, part := range strings.Split(rev, "/") {
		if part == "" || part == "." || part == ".." {
			return false
		}
	}
	return true
}

// CacheDir is huggingface_hub's cache folder: $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE (its
// older name), else $HF_HOME/hub, else ~/.cache/huggingface/hub ($XDG_CACHE_HOME when set).
func CacheDir() string {
	for _, v := range []string{"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"} {
		if d := os.Getenv(v); d != "" {
			return expandHome(d)
		}
	}
	return filepath.Join(hfHome(), "hub")
}

// hfHome is $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface.
func hfHome() string {
	if d := os.Getenv("HF_HOME"); d != "" {
		return expandHome(d)
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(expandHome(d), "huggingface")
	}
	return filepath.Join(expandHome("~"), ".cache", "huggingface")
}

func expandHome(p string) string {
	if p != "~" && !strings.HasPrefix(p, "~/") {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return p
	}
	return filepath.Join(home, p[1:])
}

// repoFolder is models--ORG--NAME under the cache.
func repoFolder(cache, repo string) string {
	return filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"))
}

var commitHash = regexp.MustCompile(`^[0-9a-f]{40}$`)

// ErrNotCached is wrapped by Resolve's error when the cache has no snapshot for the ref.
var ErrNotCached = errors.New("not in the Hugging Face cache")

// Resolve returns the snapshot folder of ref in the cache, offline: refs/REVISION names the
// commit, or the revision is a commit whose snapshot is there.
func Resolve(cache string, ref Ref) (string, error) {
	folder := repoFolder(cache, ref.Repo)
	commit := ref.Revision
	if !commitHash.MatchString(commit) {
		b, err := os.ReadFile(filepath.Join(folder, "refs", filepath.FromSlash(ref.Revision)))
		if err != nil {
			return "", notCached(cache, ref)
		}
		commit = strings.TrimSpace(string(b))
		if !commitHash.MatchString(commit) {
			return "", fmt.Errorf("%s: %q is not a commit hash", filepath.Join(folder, "refs", ref.Revision), commit)
		}
	}
	dir := filepath.Join(folder, "snapshots", commit)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", notCached(cache, ref)
	}
	return dir, nil
}

func notCached(cache string, ref Ref) error {
	return fmt.Errorf("model %s: %w (%s); download it with `tiller pull %s`", ref, ErrNotCached, cache, ref)
}
