package gguf

import (
	"fmt"
	"math"
)

// Has says whether the metadata holds key.
func (g *File) Has(key string) bool {
	_, ok := g.Meta[key]
	return ok
}

func (g *File) missing(key string) error {
	return fmt.Errorf("%s: no metadata key %s", g.Path, key)
}

func (g *File) wrongType(key, want string) error {
	v := g.Meta[key]
	t := v.Type.String()
	if v.Type == TypeArray {
		t = "array of " + v.ElemType.String()
	}
	return fmt.Errorf("%s: metadata %s is %s, want %s", g.Path, key, t, want)
}

// String is a string value.
func (g *File) String(key string) (string, error) {
	v, ok := g.Meta[key]
	if !ok {
		return "", g.missing(key)
	}
	s, ok := v.V.(string)
	if !ok {
		return "", g.wrongType(key, "a string")
	}
	return s, nil
}

// Int is an integer value of any width and signedness (writers disagree: repeng writes u32 where
// llama.cpp writes i32).
func (g *File) Int(key string) (int64, error) {
	v, ok := g.Meta[key]
	if !ok {
		return 0, g.missing(key)
	}
	n, ok := toInt(v.V)
	if !ok {
		return 0, g.wrongType(key, "an integer")
	}
	return n, nil
}

func toInt(v any) (int64, bool) {
	switch n := v.(type) {
	case uint8:
		return int64(n), true
	case int8:
		return int64(n), true
	case uint16:
		return int64(n), true
	case int16:
		return int64(n), true
	case uint32:
		return int64(n), true
	case int32:
		return int64(n), true
	case int64:
		return n, true
	case uint64:
		if n <= math.MaxInt64 {
			return int64(n), true
		}
	}
	return 0, false
}

// Float is a floating-point value (f32 or f64).
func (g *File) Float(key string) (float64, error) {
	v, ok := g.Meta[key]
	if !ok {
		return 0, g.missing(key)
	}
	switch f := v.V.(type) {
	case float32:
		return float64(f), nil
	case float64:
		return f, nil
	}
	return 0, g.wrongType(key, "a float")
}

// Bool is a bool value.
func (g *File) Bool(key string) (bool, error) {
	v, ok := g.Meta[key]
	if !ok {
		return false, g.missing(key)
	}
	b, ok := v.V.(bool)
	if !ok {
		return false, g.wrongType(key, "a bool")
	}
	return b, nil
}

// Strings is an array of strings.
func (g *File) Strings(key string) ([]string, error) {
	v, ok := g.Meta[key]
	if !ok {
		return nil, g.missing(key)
	}
	s, ok := v.V.([]string)
	if !ok {
		return nil, g.wrongType(key, "an array of strings")
	}
	return s, nil
}

// Ints is an array of integers of any width, widened.
func (g *File) Ints(key string) ([]int64, error) {
	v, ok := g.Meta[key]
	if !ok {
		return nil, g.missing(key)
	}
	var out []int64
	switch a := v.V.(type) {
	case []int32:
		out = fill(len(a), func(i int) int64 { return int64(a[i]) })
	case []uint32:
		out = fill(len(a), func(i int) int64 { return int64(a[i]) })
	case []int64:
		out = a
	case []uint8:
		out = fill(len(a), func(i int) int64 { return int64(a[i]) })
	case []int8:
		out = fill(len(a), func(i int) int64 { return int64(a[i]) })
	case []int16:
		out = fill(len(a), func(i int) int64 { return int64(a[i]) })
	case []uint16:
		out = fill(len(a), func(i int) int64 { return int64(a[i]) })
	default:
		return nil, g.wrongType(key, "an array of integers")
	}
	return out, nil
}

// Format prints a value for people: scalars as they are, strings quoted, long arrays cut short.
func (v Value) Format(limit int) string {
	switch a := v.V.(type) {
	case string:
		s := fmt.Sprintf("%q", a)
		if len(s) > limit {
			s = s[:limit] + "…"
		}
		return s
	case []string:
		return formatArray(a, limit, func(s string) string { return fmt.Sprintf("%q", s) })
	case bool, float32, float64, uint8, int8, uint16, int16, uint32, int32, uint64, int64:
		return fmt.Sprint(a)
	}
	return fmt.Sprintf("[%d × %s]", arrayLen(v.V), v.ElemType)
}

func formatArray[T any](a []T, limit int, f func(T) string) string {
	s := fmt.Sprintf("[%d × string]", len(a))
	for i, x := range a {
		if len(s) > limit {
			return s + " …"
		}
		if i == 0 {
			s += " "
		} else {
			s += ", "
		}
		s += f(x)
	}
	return s
}

func arrayLen(v any) int {
	switch a := v.(type) {
	case []uint8:
		return len(a)
	case []int8:
		return len(a)
	case []uint16:
		return len(a)
	case []int16:
		return len(a)
	case []uint32:
		return len(a)
	case []int32:
		return len(a)
	case []float32:
		return len(a)
	case []uint64:
		return len(a)
	case []int64:
		return len(a)
	case []float64:
		return len(a)
	case []bool:
		return len(a)
	}
	return 0
}
