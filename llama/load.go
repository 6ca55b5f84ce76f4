package llama

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/tillerlm/tiller/llama/safetensors"
)

// LoadOptions tune Load. The zero value loads quietly.
type LoadOptions struct {
	// Log receives progress and warnings (unexpected tensors, a sliding window, …); nil discards them.
	Log io.Writer
	// Prefetch reads every page of the weights during Load, with progress on Log, instead of
	// on first use; worth it for large checkpoints.
	Prefetch bool
	// Resident copies the weights into memory of the process backed by 2 MiB huge pages, instead
	// of reading them through the file's mapping in 4 KiB pages: decoding on the CPU reads every
	// weight once per token, and the huge pages make that stream faster (safetensors.File.Resident).
	// It implies Prefetch. The copy cannot be dropped by the kernel the way the page cache can,
	// so a checkpoint larger than 3/4 of the memory available stays mapped (with a note on Log).
	Resident bool
}

// Load opens a Hugging Face model folder: config.json, generation_config.json (optional) and
// model.safetensors or model.safetensors.index.json with its shards. Weights stay memory-mapped
// in the checkpoint's dtype. Every tensor the config implies must be present with its shape.
func Load(dir string, opts LoadOptions) (*Model, error) {
	logw := opts.Log
	if logw == nil {
		logw = io.Discard
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("model folder: %v", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("model folder %s is not a directory", dir)
	}
	cfg, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	if cfg.SlidingWindowNote != "" {
		fmt.Fprintf(logw, "%s: %s\n", dir, cfg.SlidingWindowNote)
	}
	gen, err := ReadGenerationConfig(dir)
	if err != nil {
		return nil, err
	}
	files, where, err := openCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	m := &Model{Config: cfg, Gen: gen, InvFreq: cfg.InvFreq(), files: files}
	if opts.Resident {
		resident, err := makeResident(files, logw)
		if err != nil {
			m.Close()
			return nil, err
		}
		opts.Prefetch = !resident
	}
	if err := m.bind(where, logw); err != nil {
		m.Close()
		return nil, err
	}
	if cfg.TieEmbeddings {
		m.LMHead = m.Embed
	}
	if opts.Prefetch {
		m.prefetch(where, logw)
	}
	return m, nil
}

// openCheckpoint opens the single file or every shard and says which file holds each tensor.
func openCheckpoint(dir string) ([]*safetensors.File, map[string]*safetensors.File, error) {
	single := filepath.Join(dir, "model.safetensors")
	index := filepath.Join(dir, "model.safetensors.index.json")
	where := map[string]*safetensors.File{}
	if _, err := os.Stat(index); err == nil {
		b, err := os.ReadFile(index)
		if err != nil {
			return nil, nil, err
		}
		var idx struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(b, &idx); err != nil {
			return nil, nil, fmt.Errorf("%s: malformed JSON: %v", index, err)
		}
		if len(idx.WeightMap) == 0 {
			return nil, nil, fmt.Errorf("%s: weight_map is missing or empty", index)
		}
		shards := map[string]*safetensors.File{}
		var files []*safetensors.File
		fail := func(err error) ([]*safetensors.File, map[string]*safetensors.File, error) {
			for _, f := range files {
				f.Close()
			}
			return nil, nil, err
		}
		names := make([]string, 0, len(idx.WeightMap))
		for name := range idx.WeightMap {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			shard := idx.WeightMap[name]
			if shard != filepath.Base(shard) || shard == "" {
				return fail(fmt.Errorf("%s: tensor %q maps to %q, which is not a file name in the folder", index, name, shard))
			}
			f, ok := shards[shard]
			if !ok {
				var err error
				if f, err = safetensors.Open(filepath.Join(dir, shard)); err != nil {
					return fail(err)
				}
				shards[shard] = f
				files = append(files, f)
			}
			if _, ok := f.Info(name); !ok {
				return fail(fmt.Errorf("%s: lists tensor %q in %s, which does not hold it", index, name, shard))
			}
			where[name] = f
		}
		for _, f := range files {
			for _, name := range f.Names() {
				if _, ok := where[name]; !ok {
					return fail(fmt.Errorf("%s: holds tensor %q that %s does not list", f.Path, name, index))
				}
			}
		}
		return files, where, nil
	}
	if _, err := os.Stat(single); err != nil {
		return nil, nil, fmt.Errorf("model folder %s has neither model.safetensors nor model.safetensors.index.json", dir)
	}
	f, err := safetensors.Open(single)
	if err != nil {
		return nil, nil, err
	}
	for _, name := range f.Names() {
		where[name] = f
	}
	return []*safetensors.File{f}, where, nil
}

// bind points every field of m at its tensor, checking presence, dtype and shape, and reports the
// tensors the config does not explain.
func (m *Model) bind(where map[string]*safetensors.File, logw io.Writer) error {
	expected := map[string]bool{}
	for _, w := range m.Weights() {
		expected[w.Name] = true
		f, ok := where[w.Name]
		if !ok {
			return fmt.Errorf("checkpoint has no tensor %q, which the config implies with shape %s", w.Name, safetensors.ShapeString(w.Shape))
		}
		info, _ := f.Info(w.Name)
		if fmt.Sprint(info.Shape) != fmt.Sprint(w.Shape) {
			return fmt.Errorf("%s: tensor %q has shape %s, the config implies %s", f.Path, w.Name, safetensors.ShapeString(info.Shape), safetensors.ShapeString(w.Shape))
		}
		switch info.DType {
		case "F32", "BF16", "F16":
		default:
			return fmt.Errorf("%s: tensor %q has dtype %s; tiller computes with F32, BF16 and F16 weights", f.Path, w.Name, info.DType)
		}
		t, err := f.Tensor(w.Name)
		if err != nil {
			return err
		}
		*w.Dst = t
	}
	var extra []string
	for name := range where {
		if !expected[name] {
			extra = append(extra, name)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		fmt.Fprintf(logw, "warning: checkpoint holds %d tensors the config does not use (ignored): %s\n", len(extra), strings.Join(extra, ", "))
	}
	return nil
}

// makeResident copies the checkpoint's files into huge-page memory (safetensors.File.Resident),
// printing progress about twice a second, when they fit in 3/4 of the memory available, and
// reports whether it did.
func makeResident(files []*safetensors.File, logw io.Writer) (bool, error) {
	var total int64
	for _, f := range files {
		total += f.Size()
	}
	if avail := memAvailable(); total > avail/4*3 {
		fmt.Fprintf(logw, "note: %.1f GB of weights and %.1f GB of memory available: the weights stay mapped from the file (slower decoding on the CPU)\n", float64(total)/1e9, float64(avail)/1e9)
		return false, nil
	}
	var before int64
	start, last := time.Now(), time.Now()
	for _, f := range files {
		err := f.Resident(func(done int64) {
			if time.Since(last) > 500*time.Millisecond {
				fmt.Fprintf(logw, "\rloading weights: %.1f / %.1f GB (%d%%)", float64(before+done)/1e9, float64(total)/1e9, 100*(before+done)/max(total, 1))
				last = time.Now()
			}
		})
		if err != nil {
			return false, err
		}
		before += f.Size()
	}
	if time.Since(start) > 500*time.Millisecond {
		fmt.Fprintf(logw, "\rloading weights: %.1f GB in %.1fs          \n", float64(total)/1e9, time.Since(start).Seconds())
	}
	return true, nil
}

// memAvailable is the kernel's estimate of the memory available to new allocations without
// swapping (MemAvailable in /proc/meminfo), or 0 where it cannot be read.
func memAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		var kb int64
		if _, err := fmt.Sscanf(line, "MemAvailable: %d kB", &kb); err == nil {
			return kb << 10
		}
	}
	return 0
}

// prefetch reads the weights in, printing progress about twice a second.
func (m *Model) prefetch(where map[string]*safetensors.File, logw io.Writer) {
	var total, done int64
	ws := m.Weights()
	for _, w := range ws {
		total += int64(len((*w.Dst).Data))
	}
	start, last := time.Now(), time.Now()
	for _, w := range ws {
		done += where[w.Name].Advise(w.Name)
		if time.Since(last) > 500*time.Millisecond {
			fmt.Fprintf(logw, "\rloading weights: %.1f / %.1f GB (%d%%)", float64(done)/1e9, float64(total)/1e9, 100*done/max(total, 1))
			last = time.Now()
		}
	}
	if time.Since(start) > 500*time.Millisecond {
		fmt.Fprintf(logw, "\rloading weights: %.1f GB in %.1fs          \n", float64(total)/1e9, time.Since(start).Seconds())
	}
}
