package gguf

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// Dequantize writes the F32 values of src, which holds len(dst) elements of type t, into dst.
// The arithmetic follows ggml's reference dequantize_row_* (and gguf-py's, which transformers'
// GGUF loader uses) operation by operation in float32, so the results are bit-identical to
// theirs: a scale times a small integer, minus (or plus) a minimum.
func Dequantize(t TensorType, src []byte, dst []float32) error {
	info, ok := typeInfo[t]
	if !ok {
		return fmt.Errorf("unknown tensor type %d", uint32(t))
	}
	n := uint64(len(dst))
	if n%info.block != 0 || uint64(len(src)) != n/info.block*info.size {
		return fmt.Errorf("%s: %d bytes do not hold %d elements", t, len(src), n)
	}
	blocks := int(n / info.block)
	bs := int(info.block)
	switch t {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = half(src[2*i:])
		}
	case BF16:
		for i := range dst {
			dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
		}
	case Q8_0:
		for b := range blocks {
			q4q8(src[b*34:], dst[b*bs:], 8)
		}
	case Q4_0:
		for b := range blocks {
			q4q8(src[b*18:], dst[b*bs:], 4)
		}
	case Q4_1:
		for b := range blocks {
			q41(src[b*20:], dst[b*bs:])
		}
	case Q5_0:
		for b := range blocks {
			q5(src[b*22:], dst[b*bs:], false)
		}
	case Q5_1:
		for b := range blocks {
			q5(src[b*24:], dst[b*bs:], true)
		}
	case Q4_K:
		for b := range blocks {
			q4k(src[b*144:], dst[b*bs:])
		}
	case Q5_K:
		for b := range blocks {
			q5k(src[b*176:], dst[b*bs:])
		}
	case Q6_K:
		for b := range blocks {
			q6k(src[b*210:], dst[b*bs:])
		}
	default:
		return fmt.Errorf("tensor type %s is not supported (tiller reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K)", t)
	}
	return nil
}

// Supported says whether Dequantize reads t.
func Supported(t TensorType) bool {
	switch t {
	case F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K:
		return true
	}
	return false
}

func half(b []byte) float32 {
	return float16.Frombits(binary.LittleEndian.Uint16(b)).Float32()
}

// q4q8 is one block of 32 of Q8_0 (d f16, qs int8[32]: y = d·q) or Q4_0 (d f16, qs u8[16]:
// y[j] = d·(lo nibble − 8), y[j+16] = d·(hi nibble − 8)).
func q4q8(b []byte, y []float32, bitsPer int) {
	d := half(b)
	qs := b[2:]
	if bitsPer == 8 {
		for j := range 32 {
			y[j] = float32(int8(qs[j])) * d
		}
		return
	}
	for j := range 16 {
		y[j] = float32(int(qs[j]&0xf)-8) * d
		y[j+16] = float32(int(qs[j]>>4)-8) * d
	}
}

// q41 is one block of Q4_1: d f16, m f16, qs u8[16]; y = d·q + m.
func q41(b []byte, y []float32) {
	d, m := half(b), half(b[2:])
	qs := b[4:]
	for j := range 16 {
		y[j] = float32(float32(qs[j]&0xf)*d) + m
		y[j+16] = float32(float32(qs[j]>>4)*d) + m
	}
}

// q5 is one block of Q5_0 (d f16, qh u32, qs u8[16]; y = d·(q − 16)) or Q5_1 (d, m f16, qh,
// qs; y = d·q + m). Bit j of qh is the fifth bit of element j.
func q5(b []byte, y []float32, withMin bool) {
	d := half(b)
	var m float32
	if withMin {
		m = half(b[2:])
		b = b[2:]
	}
	qh := binary.LittleEndian.Uint32(b[2:])
	qs := b[6:]
	for j := range 16 {
		x0 := int(qs[j]&0xf) | int((qh>>j)<<4)&0x10
		x1 := int(qs[j]>>4) | int(qh>>(j+12))&0x10
		if withMin {
			y[j] = float32(float32(x0)*d) + m
			y[j+16] = float32(float32(x1)*d) + m
		} else {
			y[j] = float32(x0-16) * d
			y[j+16] = float32(x1-16) * d
		}
	}
}

// scaleMinK4 unpacks the j-th 6-bit scale and minimum of a Q4_K/Q5_K block's 12 scale bytes.
func scaleMinK4(j int, q []byte) (sc, m float32) {
	if j < 4 {
		return float32(q[j] & 63), float32(q[j+4] & 63)
	}
	return float32(q[j+4]&0xf | (q[j-4]>>6)<<4), float32(q[j+4]>>4 | (q[j]>>6)<<4)
}

// q4k is one super-block of 256 of Q4_K: d, dmin f16, scales u8[12], qs u8[128]; eight
// sub-blocks of 32, each y = (d·sc)·q − (dmin·m).
func q4k(b []byte, y []float32) {
	d, dmin := half(b), half(b[2:])
	scales, q := b[4:16], b[16:]
	for j := 0; j < 256; j += 64 {
		is := j / 32
		sc, m := scaleMinK4(is, scales)
		d1, m1 := float32(d*sc), float32(dmin*m)
		sc, m = scaleMinK4(is+1, scales)
		d2, m2 := float32(d*sc), float32(dmin*m)
		for l := range 32 {
			y[j+l] = float32(d1*float32(q[l]&0xf)) - m1
			y[j+32+l] = float32(d2*float32(q[l]>>4)) - m2
		}
		q = q[32:]
	}
}

// q5k is one super-block of 256 of Q5_K: d, dmin f16, scales u8[12], qh u8[32], qs u8[128];
// as Q4_K with a fifth bit from qh.
func q5k(b []byte, y []float32) {
	d, dmin := half(b), half(b[2:])
	scales, qh, ql := b[4:16], b[16:48], b[48:]
	u1, u2 := byte(1), byte(2)
	for j := 0; j < 256; j += 64 {
		is := j / 32
		sc, m := scaleMinK4(is, scales)
		d1, m1 := float32(d*sc), float32(dmin*m)
		sc, m = scaleMinK4(is+1, scales)
		d2, m2 := float32(d*sc), float32(dmin*m)
		for l := range 32 {
			hi1, hi2 := 0, 0
			if qh[l]&u1 != 0 {
				hi1 = 16
			}
			if qh[l]&u2 != 0 {
				hi2 = 16
			}
			y[j+l] = float32(d1*float32(int(ql[l]&0xf)+hi1)) - m1
			y[j+32+l] = float32(d2*float32(int(ql[l]>>4)+hi2)) - m2
		}
		ql = ql[32:]
		u1 <<= 2
		u2 <<= 2
	}
}

// q6k is one super-block of 256 of Q6_K: ql u8[128] (low 4 bits), qh u8[64] (high 2 bits),
// scales i8[16], d f16; y = (d·scale)·(q − 32) over sixteen sub-blocks of 16.
func q6k(b []byte, y []float32) {
	ql, qh, sc := b[:128], b[128:192], b[192:208]
	d := half(b[208:])
	for n := 0; n < 256; n += 128 {
		for l := range 32 {
			is := l / 16
			q1 := int(ql[l]&0xf|(qh[l]&3)<<4) - 32
			q2 := int(ql[l+32]&0xf|(qh[l]>>2&3)<<4) - 32
			q3 := int(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
			q4 := int(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
			y[n+l] = float32(d*float32(int8(sc[is]))) * float32(q1)
			y[n+l+32] = float32(d*float32(int8(sc[is+2]))) * float32(q2)
			y[n+l+64] = float32(d*float32(int8(sc[is+4]))) * float32(q3)
			y[n+l+96] = float32(d*float32(int8(sc[is+6]))) * float32(q4)
		}
		ql, qh, sc = ql[64:], qh[32:], sc[8:]
	}
}
