package tinychat

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ModelName is how commands name the embedded model: `--model tiny-chat`, or no --model at all.
const ModelName = "tiny-chat"

// model is the trained checkpoint in Hugging Face layout (model/README.md says how it was made);
// the loss curve beside it stays out of the binary.
//
//go:embed model/README.md model/config.json model/generation_config.json model/model.safetensors
//go:embed model/tokenizer.json model/tokenizer_config.json
var model embed.FS

// ModelFS returns the embedded checkpoint's files, at the root of the returned file system.
func ModelFS() fs.FS {
	sub, err := fs.Sub(model, "model")
	if err != nil {
		panic(err) // "model" is a fixed, embedded folder
	}
	return sub
}

// ModelDir returns a folder holding the embedded checkpoint, writing it on first use under
// cacheRoot (os.UserCacheDir() when empty, else the system's temporary folder) in a subfolder
// named by the hash of every embedded file, so that a changed model, tokenizer or chat template
// never reads a stale copy. The loader memory-maps files, hence a real folder rather than reading
// from the binary.
func ModelDir(cacheRoot string) (string, error) {
	h := sha256.New()
	err := fs.WalkDir(model, "model", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := model.ReadFile(path)
		fmt.Fprintf(h, "%s %d\n", path, len(data))
		h.Write(data)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("embedded %s: %v", ModelName, err)
	}
	sum := h.Sum(nil)
	if cacheRoot == "" {
		if cacheRoot, err = os.UserCacheDir(); err != nil {
			cacheRoot = os.TempDir()
		}
		cacheRoot = filepath.Join(cacheRoot, "tiller")
	}
	dir := filepath.Join(cacheRoot, ModelName+"-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(filepath.Join(dir, "model.safetensors")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(cacheRoot, 0o755); err != nil {
		return "", fmt.Errorf("embedded %s: %v", ModelName, err)
	}
	// Write into a fresh folder and rename it into place, so that a reader never sees a partial
	// copy and two processes writing at once both end with a whole one.
	tmp, err := os.MkdirTemp(cacheRoot, ModelName+"-partial-")
	if err != nil {
		return "", fmt.Errorf("embedded %s: %v", ModelName, err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("embedded %s: %v", ModelName, err)
	}
	if err := os.CopyFS(tmp, ModelFS()); err != nil {
		return "", fmt.Errorf("embedded %s: writing %s: %v", ModelName, tmp, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, statErr := os.Stat(filepath.Join(dir, "model.safetensors")); statErr == nil {
			return dir, nil // another process put it there first
		}
		return "", fmt.Errorf("embedded %s: %v", ModelName, err)
	}
	return dir, nil
}
