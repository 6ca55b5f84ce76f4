package safetensors

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/tillerlm/tiller/tensor"
)

// File is an open safetensors file, memory-mapped read-only: tensors share the mapping, so
// opening a checkpoint costs no copy and pages are read on first use.
type File struct {
	Path   string
	Header *Header
	byName map[string]int
	data   []byte // the whole file, mapped
}

// Open maps path and validates its header. Errors name the file.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s: is a directory, not a safetensors file", path)
	}
	size := st.Size()
	prefix := make([]byte, 8)
	if _, err := io.ReadFull(f, prefix); err != nil {
		return nil, fmt.Errorf("%s: file of %d bytes is too short for a safetensors header", path, size)
	}
	if n := binary.LittleEndian.Uint64(prefix); n <= maxHeader && int64(n) <= size-8 {
		prefix = make([]byte, 8+n)
		if _, err := f.ReadAt(prefix, 0); err != nil {
			return nil, fmt.Errorf("%s: reading the header: %v", path, err)
		}
	}
	h, err := ParseHeader(prefix, size)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("%s: mmap: %v", path, err)
	}
	file := &File{Path: path, Header: h, byName: map[string]int{}, data: data}
	for i, t := range h.Tensors {
		file.byName[t.Name] = i
	}
	return file, nil
}

// Close unmaps the file. Tensors obtained from it must not be used afterwards.
func (f *File) Close() error {
	if f.data == nil {
		return nil
	}
	err := unix.Munmap(f.data)
	f.data = nil
	return err
}

// Info returns the description of the named tensor.
func (f *File) Info(name string) (Info, bool) {
	i, ok := f.byName[name]
	if !ok {
		return Info{}, false
	}
	return f.Header.Tensors[i], true
}

// Bytes returns the named tensor's raw bytes inside the mapping.
func (f *File) Bytes(name string) ([]byte, error) {
	info, ok := f.Info(name)
	if !ok {
		return nil, fmt.Errorf("%s: no tensor %q", f.Path, name)
	}
	return f.data[f.Header.DataAt+info.Begin : f.Header.DataAt+info.End], nil
}

// Tensor returns the named tensor, sharing the mapping. Only the dtypes tiller computes with are
// accepted (F32, BF16, F16, I32). Data that is not aligned to its element size is copied.
func (f *File) Tensor(name string) (*tensor.Tensor, error) {
	info, ok := f.Info(name)
	if !ok {
		return nil, fmt.Errorf("%s: no tensor %q", f.Path, name)
	}
	dt, err := tensor.ParseDType(info.DType)
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q has dtype %s; tiller reads F64, F32, BF16, F16 and I32", f.Path, name, info.DType)
	}
	b, _ := f.Bytes(name)
	t, err := tensor.Wrap(dt, b, info.Shape...)
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %v", f.Path, name, err)
	}
	if !t.Aligned() {
		aligned := tensor.New(dt, info.Shape...)
		copy(aligned.Data, b)
		t = aligned
	}
	return t, nil
}

// Names lists the tensors in file order.
func (f *File) Names() []string {
	names := make([]string, len(f.Header.Tensors))
	for i, t := range f.Header.Tensors {
		names[i] = t.Name
	}
	return names
}

// Advise tells the kernel the named tensor will be read soon and touches each of its pages, so a
// load can show progress and the first forward pass does not stall on disk. It returns the bytes
// touched.
func (f *File) Advise(name string) int64 {
	info, ok := f.Info(name)
	if !ok || info.End == info.Begin {
		return 0
	}
	page := int64(os.Getpagesize())
	begin, end := f.Header.DataAt+info.Begin, f.Header.DataAt+info.End
	_ = unix.Madvise(f.data[begin-begin%page:end], unix.MADV_WILLNEED) // only a hint
	var sum byte
	for i := begin; i < end; i += page {
		sum += f.data[i]
	}
	touched.Add(uint32(sum))
	return end - begin
}

// touched keeps the page-touching loads of Advise from being optimised away.
var touched atomic.Uint32
