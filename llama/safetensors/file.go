package safetensors

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tillerlm/tiller/tensor"
)

// File is an open safetensors file, memory-mapped read-only: tensors share the mapping, so
// opening a checkpoint costs no copy and pages are read on first use.
type File struct {
	Path    string
	Header  *Header
	byName  map[string]int
	data    []byte // the whole file, mapped (or copied, by Resident)
	mapping []byte // what Close unmaps: the file's mapping, or Resident's memory around data
	copied  bool   // data is Resident's copy
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
	file := &File{Path: path, Header: h, byName: map[string]int{}, data: data, mapping: data}
	for i, t := range h.Tensors {
		file.byName[t.Name] = i
	}
	return file, nil
}

// Close unmaps the file. Tensors obtained from it must not be used afterwards.
func (f *File) Close() error {
	if f.mapping == nil {
		return nil
	}
	err := unix.Munmap(f.mapping)
	f.data, f.mapping = nil, nil
	return err
}

// Size is the file's size in bytes.
func (f *File) Size() int64 { return int64(len(f.data)) }

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

// hugePage is the size of the transparent huge pages Resident asks for (x86-64 and arm64 with 4 KiB
// base pages).
const hugePage = 2 << 20

// Resident reads the whole file into memory of the process that the kernel may back with
// transparent huge pages (madvise MADV_HUGEPAGE) and uses that copy instead of the file's mapping,
// calling progress (when not nil) with the bytes read so far after each chunk. Tensors taken from
// the file before the call keep pointing at the old mapping, which is unmapped: take them after.
//
// Why: decoding one token reads every weight once, a stream of hundreds of megabytes that a
// mapping of the page cache serves in 4 KiB pages, one TLB miss and page walk per 4 KiB, and the
// hardware prefetchers stop at every page boundary. In 2 MiB pages the same stream runs measurably
// faster (bench/RESULTS.md). The copy is memory of the process, not page cache the kernel can
// drop: callers decide whether the machine has room (a model larger than memory must stay mapped).
// Where the kernel gives no huge pages (THP disabled), the copy is still correct, only no faster.
func (f *File) Resident(progress func(done int64)) error {
	size := len(f.data)
	if size == 0 || f.mapping == nil || f.copied {
		return nil // empty, closed, or already resident
	}
	// Over-allocate by a huge page, so that the copy can start on a huge-page boundary.
	mem, err := unix.Mmap(-1, 0, size+hugePage, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("%s: %d bytes of memory for the weights: %v", f.Path, size, err)
	}
	off := 0
	if a := int(uintptr(unsafe.Pointer(&mem[0])) % hugePage); a != 0 {
		off = hugePage - a
	}
	data := mem[off : off+size]
	_ = unix.Madvise(data, unix.MADV_HUGEPAGE) // only a hint: without THP, 4 KiB pages
	const chunk = 64 << 20
	for done := 0; done < size; {
		n := copy(data[done:min(done+chunk, size)], f.data[done:])
		done += n
		if progress != nil {
			progress(int64(done))
		}
	}
	// Read-only from here on, as the file's mapping was: a stray write faults instead of
	// changing a weight.
	if err := unix.Mprotect(mem, unix.PROT_READ); err != nil {
		unix.Munmap(mem)
		return fmt.Errorf("%s: mprotect: %v", f.Path, err)
	}
	unix.Munmap(f.mapping)
	f.data, f.mapping, f.copied = data, mem, true
	return nil
}

// touched keeps the page-touching loads of Advise from being optimised away.
var touched atomic.Uint32
