package gguf

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"syscall"
)

// Tensor is a tensor to write.
type Tensor struct {
	Name string
	Dims []uint64
	Type TensorType
	Data []byte
}

type writer struct {
	w   io.Writer
	n   int64
	err error
}

func (w *writer) bytes(p []byte) {
	if w.err == nil {
		var k int
		k, w.err = w.w.Write(p)
		w.n += int64(k)
	}
}

func (w *writer) u32(v uint32) { w.bytes(binary.LittleEndian.AppendUint32(nil, v)) }
func (w *writer) u64(v uint64) { w.bytes(binary.LittleEndian.AppendUint64(nil, v)) }
func (w *writer) str(s string) { w.u64(uint64(len(s))); w.bytes([]byte(s)) }

func (w *writer) value(v Value) error {
	switch x := v.(type) {
	case uint8:
		w.u32(uint32(Uint8))
		w.bytes([]byte{x})
	case int8:
		w.u32(uint32(Int8))
		w.bytes([]byte{byte(x)})
	case bool:
		w.u32(uint32(Bool))
		b := byte(0)
		if x {
			b = 1
		}
		w.bytes([]byte{b})
	case uint16:
		w.u32(uint32(Uint16))
		w.bytes(binary.LittleEndian.AppendUint16(nil, x))
	case int16:
		w.u32(uint32(Int16))
		w.bytes(binary.LittleEndian.AppendUint16(nil, uint16(x)))
	case uint32:
		w.u32(uint32(Uint32))
		w.u32(x)
	case int32:
		w.u32(uint32(Int32))
		w.u32(uint32(x))
	case float32:
		w.u32(uint32(Float32))
		w.u32(math.Float32bits(x))
	case uint64:
		w.u32(uint32(Uint64))
		w.u64(x)
	case int64:
		w.u32(uint32(Int64))
		w.u64(uint64(x))
	case float64:
		w.u32(uint32(Float64))
		w.u64(math.Float64bits(x))
	case string:
		w.u32(uint32(String))
		w.str(x)
	case []string:
		w.u32(uint32(Array))
		w.u32(uint32(String))
		w.u64(uint64(len(x)))
		for _, s := range x {
			w.str(s)
		}
	case []int32:
		w.u32(uint32(Array))
		w.u32(uint32(Int32))
		w.u64(uint64(len(x)))
		for _, e := range x {
			w.u32(uint32(e))
		}
	case []uint32:
		w.u32(uint32(Array))
		w.u32(uint32(Uint32))
		w.u64(uint64(len(x)))
		for _, e := range x {
			w.u32(e)
		}
	case []float32:
		w.u32(uint32(Array))
		w.u32(uint32(Float32))
		w.u64(uint64(len(x)))
		for _, e := range x {
			w.u32(math.Float32bits(e))
		}
	default:
		return fmt.Errorf("gguf: cannot write a %T", v)
	}
	return nil
}

// Write writes a GGUF v3 file: meta (general.alignment, when present,
// must be a uint32 and sets the alignment), then the tensors' infos and
// their data, each aligned.
func Write(out io.Writer, meta []KV, tensors []Tensor) error {
	align := uint64(DefaultAlignment)
	for _, kv := range meta {
		if kv.Key == "general.alignment" {
			a, ok := kv.Value.(uint32)
			if !ok || a == 0 || a&(a-1) != 0 {
				return fmt.Errorf("gguf: general.alignment must be a power-of-two uint32, got %v", kv.Value)
			}
			align = uint64(a)
		}
	}
	w := &writer{w: out}
	w.u32(Magic)
	w.u32(3)
	w.u64(uint64(len(tensors)))
	w.u64(uint64(len(meta)))
	for _, kv := range meta {
		w.str(kv.Key)
		if err := w.value(kv.Value); err != nil {
			return err
		}
	}
	offset := uint64(0)
	for _, t := range tensors {
		n := uint64(1)
		for _, d := range t.Dims {
			n *= d
		}
		size, err := t.Type.Bytes(n)
		if err != nil {
			return fmt.Errorf("gguf: tensor %q: %w", t.Name, err)
		}
		if size != uint64(len(t.Data)) {
			return fmt.Errorf("gguf: tensor %q: %d bytes of data for %d elements of %s (want %d)", t.Name, len(t.Data), n, t.Type, size)
		}
		w.str(t.Name)
		w.u32(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			w.u64(d)
		}
		w.u32(uint32(t.Type))
		w.u64(offset)
		offset = (offset + size + align - 1) / align * align
	}
	pad := func() {
		if r := uint64(w.n) % align; r != 0 {
			w.bytes(make([]byte, align-r))
		}
	}
	pad()
	for _, t := range tensors {
		w.bytes(t.Data)
		pad()
	}
	return w.err
}

// Open memory-maps the file at path and parses it; Close unmaps it.
func Open(path string) (*File, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() == 0 {
		return nil, fmt.Errorf("gguf: %s is empty", path)
	}
	b, err := syscall.Mmap(int(fd.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("gguf: mmap %s: %w", path, err)
	}
	f, err := Parse(b)
	if err != nil {
		syscall.Munmap(b)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.closer = unmapper(b)
	return f, nil
}

type unmapper []byte

func (u unmapper) Close() error { return syscall.Munmap(u) }
