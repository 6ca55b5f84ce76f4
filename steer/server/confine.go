package server

import (
	"fmt"
	"path/filepath"
)

// confine resolves name (slash-separated, relative to dir), following every link, to its real
// path and that path relative to dir's real path. A name whose real path lies outside dir's,
// through ".." or a link, is an error naming folder (the folder's role, "vectors folder"): a
// file outside is never read. Callers that answer clients keep the real path out of the answer.
func confine(dir, name, folder string) (real, rel string, err error) {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", "", err
	}
	real, err = filepath.EvalSymlinks(filepath.Join(root, filepath.FromSlash(name)))
	if err != nil {
		return "", "", err
	}
	rel, err = filepath.Rel(root, real)
	if err != nil || !filepath.IsLocal(rel) && rel != "." {
		return "", "", fmt.Errorf("%s leads outside the %s", name, folder)
	}
	return real, filepath.ToSlash(rel), nil
}
