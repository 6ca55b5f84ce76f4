package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tillerlm/tiller/tensor"
)

// Writer writes a safetensors file tensor by tensor, in the order its header lists them, so a
// checkpoint larger than memory can be written as it is made. The file appears under its name
// only when Close succeeds; until then it is a temporary file beside it, so a failed write never
// leaves a half file where a good one is expected.
type Writer struct {
	path    string
	tmp     *os.File
	buf     *bufio.Writer
	tensors []Info
	next    int   // index of the next tensor to write
	written int64 // bytes of the current tensor written so far
	err     error
}

// Create starts a file holding tensors (Name, DType, Shape; offsets are assigned here in the given
// order) and metadata.
func Create(path string, tensors []Info, metadata map[string]string) (*Writer, error) {
	var header bytes.Buffer
	header.WriteByte('{')
	if len(metadata) > 0 {
		m, err := json.Marshal(metadata)
		if err != nil {
			return nil, err
		}
		header.WriteString(`"__metadata__":`)
		header.Write(m)
	}
	infos := make([]Info, len(tensors))
	var offset int64
	seen := map[string]bool{}
	for i, t := range tensors {
		size, ok := dtypeSizes[t.DType]
		if !ok {
			return nil, fmt.Errorf("%s: tensor %q: unknown dtype %q", path, t.Name, t.DType)
		}
		if seen[t.Name] || t.Name == "__metadata__" {
			return nil, fmt.Errorf("%s: tensor name %q used twice or reserved", path, t.Name)
		}
		seen[t.Name] = true
		n := int64(size)
		for _, d := range t.Shape {
			n *= int64(d)
		}
		infos[i] = Info{Name: t.Name, DType: t.DType, Shape: append([]int(nil), t.Shape...), Begin: offset, End: offset + n}
		offset += n
		if header.Len() > 1 {
			header.WriteByte(',')
		}
		name, _ := json.Marshal(t.Name)
		shape, _ := json.Marshal(infos[i].Shape)
		if len(t.Shape) == 0 {
			shape = []byte("[]")
		}
		fmt.Fprintf(&header, `%s:{"dtype":%q,"shape":%s,"data_offsets":[%d,%d]}`, name, t.DType, shape, infos[i].Begin, infos[i].End)
	}
	header.WriteByte('}')
	// Pad with spaces so the data section starts 8-byte aligned, as the reference writer does;
	// every element is then aligned when the file is mapped.
	for (8+header.Len())%8 != 0 {
		header.WriteByte(' ')
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, err
	}
	w := &Writer{path: path, tmp: tmp, buf: bufio.NewWriterSize(tmp, 1<<20), tensors: infos}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(header.Len()))
	w.buf.Write(n[:])
	w.buf.Write(header.Bytes())
	return w, nil
}

// Write appends bytes of the current tensor; a tensor may be written in several pieces. Writing
// past the end of the last tensor is an error.
func (w *Writer) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 && w.err == nil {
		for w.next < len(w.tensors) && w.written == w.tensors[w.next].End-w.tensors[w.next].Begin {
			w.next, w.written = w.next+1, 0
		}
		if w.next == len(w.tensors) {
			w.err = fmt.Errorf("%s: %d bytes written past the last tensor", w.path, len(p))
			break
		}
		room := w.tensors[w.next].End - w.tensors[w.next].Begin - w.written
		k := min(int64(len(p)), room)
		if _, err := w.buf.Write(p[:k]); err != nil {
			w.err = fmt.Errorf("%s: %v", w.path, err)
		}
		w.written += k
		p = p[k:]
	}
	if w.err != nil {
		return total - len(p), w.err
	}
	return total, nil
}

// Close finishes the file and moves it to its name. It fails if any tensor is incomplete.
func (w *Writer) Close() error {
	defer os.Remove(w.tmp.Name())
	if w.err == nil {
		for w.next < len(w.tensors) && w.written == w.tensors[w.next].End-w.tensors[w.next].Begin {
			w.next, w.written = w.next+1, 0
		}
		if w.next < len(w.tensors) {
			t := w.tensors[w.next]
			w.err = fmt.Errorf("%s: tensor %q has %d of its %d bytes", w.path, t.Name, w.written, t.End-t.Begin)
		}
	}
	if w.err == nil {
		if err := w.buf.Flush(); err != nil {
			w.err = fmt.Errorf("%s: %v", w.path, err)
		}
	}
	// CreateTemp makes the file private; a checkpoint is an ordinary file.
	if err := w.tmp.Chmod(0o644); err != nil && w.err == nil {
		w.err = fmt.Errorf("%s: %v", w.path, err)
	}
	if err := w.tmp.Close(); err != nil && w.err == nil {
		w.err = fmt.Errorf("%s: %v", w.path, err)
	}
	if w.err != nil {
		return w.err
	}
	return os.Rename(w.tmp.Name(), w.path)
}

// Save writes named tensors and metadata to path in one go.
func Save(path string, names []string, tensors []*tensor.Tensor, metadata map[string]string) error {
	if len(names) != len(tensors) {
		return fmt.Errorf("%s: %d names for %d tensors", path, len(names), len(tensors))
	}
	infos := make([]Info, len(tensors))
	for i, t := range tensors {
		infos[i] = Info{Name: names[i], DType: t.DType.String(), Shape: t.Shape}
	}
	w, err := Create(path, infos, metadata)
	if err != nil {
		return err
	}
	for _, t := range tensors {
		if _, err := w.Write(t.Data); err != nil {
			w.Close()
			return err
		}
	}
	return w.Close()
}
