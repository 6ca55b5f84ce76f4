package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tillerlm/tiller/llama/engine"
	"github.com/tillerlm/tiller/steer"
)

// vectorName is what a vector may be called: it appears in request bodies and file names.
var vectorName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// namedVector is a vector the server holds.
type namedVector struct {
	vec    *steer.Vector
	source string // its file, relative to the vectors folder, or "inline"
	added  time.Time
	bytes  int64 // of its values
}

func sizeOf(v *steer.Vector) int64 {
	var n int64
	for _, l := range v.Layers {
		n += 4 * int64(len(l.Values))
	}
	return n
}

// LoadVectorDir loads every *.safetensors and *.gguf file of dir as a vector named by its file
// name without the extension. A vector made for another model, a file that resolves outside the
// folder (a symlink out of it), two files of one name, or more vectors than the server holds is
// an error naming the file.
func (s *Server) LoadVectorDir(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	from := map[string]string{}
	n := 0
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || ext != ".safetensors" && ext != ".gguf" {
			continue
		}
		name := strings.TrimSuffix(e.Name(), ext)
		path := filepath.Join(dir, e.Name())
		if !vectorName.MatchString(name) {
			return n, fmt.Errorf("%s: %q is not a usable vector name (letters, digits, '_', '.', '-'; up to 64)", path, name)
		}
		if other, dup := from[name]; dup {
			return n, fmt.Errorf("%s and %s are both vector %q: rename one", filepath.Join(dir, other), path, name)
		}
		from[name] = e.Name()
		real, err := vectorFile(dir, e.Name())
		if err != nil {
			return n, fmt.Errorf("%s: %v", path, err)
		}
		v, err := steer.Load(real)
		if err != nil {
			return n, err
		}
		if err := v.Check(path, s.cfg.Model.Config, false); err != nil {
			return n, err
		}
		if err := s.put(name, v, e.Name(), true, "the vectors folder"); err != nil {
			return n, fmt.Errorf("%s: %v (tiller serve --max-vectors and --max-vector-mb raise the limits)", path, err)
		}
		n++
	}
	return n, nil
}

// vectorFile resolves rel, a path inside the vectors folder dir, to the real path of a regular
// file there (see confine).
func vectorFile(dir, rel string) (string, error) {
	if !filepath.IsLocal(rel) {
		return "", errors.New("not a path inside the vectors folder")
	}
	real, _, err := confine(dir, filepath.ToSlash(rel), "vectors folder")
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", real)
	}
	return real, nil
}

// errVectorExists is put's answer for a name in use without replace.
var errVectorExists = errors.New("exists")

// put stores a vector under name within the count and byte limits. A vector of that name is
// replaced only when replace is set; who did what is logged.
func (s *Server) put(name string, v *steer.Vector, source string, replace bool, who string) error {
	size := sizeOf(v)
	s.mu.Lock()
	defer s.mu.Unlock()
	old, exists := s.vectors[name]
	count, bytes := len(s.vectors)+1, s.vectorBytes+size
	if exists {
		if !replace {
			return fmt.Errorf("%w: a vector named %q is loaded (from %s)", errVectorExists, name, old.source)
		}
		count, bytes = count-1, bytes-old.bytes
	}
	switch {
	case count > s.cfg.MaxVectors:
		return fmt.Errorf("the server holds %d vectors, its limit", s.cfg.MaxVectors)
	case bytes > s.cfg.MaxVectorBytes:
		return fmt.Errorf("%d bytes more would take the vectors past the limit of %d bytes", size, s.cfg.MaxVectorBytes)
	}
	s.vectors[name] = &namedVector{vec: v, source: source, added: time.Now(), bytes: size}
	s.vectorBytes = bytes
	if exists {
		s.logf("vector %s replaced by %s: was from %s, now from %s", name, who, old.source, source)
	} else {
		s.logf("vector %s added by %s, from %s", name, who, source)
	}
	return nil
}

func (s *Server) vector(name string) (*namedVector, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.vectors[name]
	return v, ok
}

// vectorInfo is a vector as /v1/vectors lists it.
type vectorInfo struct {
	Name       string `json:"name"`
	Object     string `json:"object"`
	Hook       string `json:"hook"`
	Layers     []int  `json:"layers"`
	HiddenSize int    `json:"hidden_size"`
	Model      string `json:"model,omitempty"`
	Method     string `json:"method,omitempty"`
	Source     string `json:"source"`
	Created    int64  `json:"created"`
	// FromEnd are the locus positions of a vector derived at one: what "positions": "locus" steers.
	FromEnd []int `json:"positions_from_end,omitempty"`
}

// info describes a vector to clients: the model it was derived on by name alone, never the
// folder it was recorded with.
func info(name string, nv *namedVector) vectorInfo {
	v := nv.vec
	model := v.Info.Model
	if filepath.IsAbs(model) {
		model = filepath.Base(model)
	}
	return vectorInfo{Name: name, Object: "steering_vector", Hook: v.Hook, Layers: v.LayerIndices(), HiddenSize: len(v.Layers[0].Values),
		Model: model, Method: v.Info.Method, Source: nv.source, Created: nv.added.Unix(), FromEnd: v.Info.FromEnd}
}

func (s *Server) listVectors(w http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	out := make([]vectorInfo, 0, len(s.vectors))
	for name, nv := range s.vectors {
		out = append(out, info(name, nv))
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": out})
}

// addVectorRequest is POST /v1/vectors: a file of the vectors folder, or the directions inline.
type addVectorRequest struct {
	Name    string               `json:"name"`
	File    string               `json:"file"`    // relative to the vectors folder
	Hook    string               `json:"hook"`    // inline: the point in each layer (hook_resid_post)
	Layers  map[string][]float64 `json:"layers"`  // inline: layer index → direction (hidden_size values)
	Replace bool                 `json:"replace"` // replace a vector of this name, which other clients may be using
}

func (s *Server) addVector(w http.ResponseWriter, r *http.Request) {
	data, err := s.body(w, r)
	if err != nil {
		s.fail(w, err)
		return
	}
	var req addVectorRequest
	if err := decode(data, &req); err != nil {
		s.fail(w, err)
		return
	}
	v, source, err := s.newVector(req)
	if err != nil {
		s.fail(w, err)
		return
	}
	if err := s.put(req.Name, v, source, req.Replace, "client "+r.RemoteAddr); err != nil {
		code := "vector_store_full"
		if errors.Is(err, errVectorExists) {
			code = "vector_exists"
			err = fmt.Errorf("%v; send \"replace\": true to replace it", err)
		}
		s.fail(w, &failure{http.StatusConflict, "invalid_request_error", code, "name", err.Error()})
		return
	}
	nv, _ := s.vector(req.Name)
	writeJSON(w, http.StatusOK, info(req.Name, nv))
}

// newVector reads a POST /v1/vectors request's vector. A file's errors say nothing of what lies
// outside the vectors folder, whether it exists, or what a file that is not a vector holds: the
// reason goes to the log.
func (s *Server) newVector(req addVectorRequest) (*steer.Vector, string, error) {
	c := s.cfg.Model.Config
	if !vectorName.MatchString(req.Name) {
		return nil, "", bad("name", "%q: want letters, digits, '_', '.' or '-', up to 64, starting with a letter or digit", req.Name)
	}
	switch {
	case req.File != "" && req.Layers != nil:
		return nil, "", bad("file", "give a file or inline layers, not both")
	case req.File != "":
		if s.cfg.VectorDir == "" {
			return nil, "", bad("file", "the server has no vectors folder (--vectors); send the layers inline")
		}
		if !filepath.IsLocal(req.File) {
			return nil, "", bad("file", "%q must be a path inside the vectors folder", req.File)
		}
		real, err := vectorFile(s.cfg.VectorDir, req.File)
		if err != nil {
			s.logf("POST /v1/vectors file %q: %v", req.File, err)
			return nil, "", bad("file", "%q: no vector file of that name inside the vectors folder", req.File)
		}
		v, err := steer.Load(real)
		if err != nil {
			s.logf("POST /v1/vectors file %q: %v", req.File, err)
			return nil, "", bad("file", "%q is not a steering vector file tiller reads (the server log says why)", req.File)
		}
		if err := v.Check(req.File, c, true); err != nil {
			return nil, "", bad("file", "%v", err) // its shape against the model's: numbers only
		}
		if err := v.Check(req.File, c, false); err != nil {
			s.logf("POST /v1/vectors file %q: %v", req.File, err)
			return nil, "", bad("file", "%q was made for a model of another shape or type (the server log says which)", req.File)
		}
		return v, filepath.ToSlash(filepath.Clean(req.File)), nil
	case len(req.Layers) == 0:
		return nil, "", bad("layers", "give a file or at least one layer's direction")
	}
	hook := req.Hook
	if hook == "" {
		hook = "hook_resid_post"
	}
	if !slices.Contains(steer.SteerableHooks, hook) {
		return nil, "", bad("hook", "%q: want one of %s", hook, strings.Join(steer.SteerableHooks, ", "))
	}
	v := &steer.Vector{Hook: hook, Info: steer.ModelInfo(s.cfg.Name, c)}
	v.Info.Source = "inline"
	for key, values := range req.Layers {
		l, err := strconv.Atoi(key)
		if err != nil || l < 0 || l >= c.Layers || key != strconv.Itoa(l) {
			return nil, "", bad("layers", "%q: want a layer index 0 to %d", key, c.Layers-1)
		}
		dir, err := direction(fmt.Sprintf("layers.%s", key), values, c.Dim)
		if err != nil {
			return nil, "", err
		}
		v.Layers = append(v.Layers, steer.Layer{Index: l, Values: dir, TrainAcc: math.NaN(), HeldAcc: math.NaN()})
	}
	sort.Slice(v.Layers, func(i, j int) bool { return v.Layers[i].Index < v.Layers[j].Index })
	return v, "inline", nil
}

// direction checks an inline direction: dim finite numbers.
func direction(param string, values []float64, dim int) ([]float32, error) {
	if len(values) != dim {
		return nil, bad(param, "%d values, but the model's hidden_size is %d: a vector for another model", len(values), dim)
	}
	out := make([]float32, dim)
	for i, x := range values {
		if math.IsNaN(x) || math.IsInf(x, 0) || math.Abs(x) > math.MaxFloat32 {
			return nil, bad(param, "value %d is %g, not a finite float32", i, x)
		}
		out[i] = float32(x)
	}
	return out, nil
}

// steeringSpec is one entry of a request's "steering" list.
type steeringSpec struct {
	Vector    json.RawMessage `json:"vector"`    // a loaded vector's name, or hidden_size numbers
	Strength  *float64        `json:"strength"`  // alpha in h += alpha·v (required)
	Layers    json.RawMessage `json:"layers"`    // "12-16", "3,5", 4 or [3, 5]; default: the vector's own
	Positions string          `json:"positions"` // all (default), prompt, generated or locus
	Hook      string          `json:"hook"`      // for an inline vector: the point in each layer (hook_resid_post)
	Relative  bool            `json:"relative"`  // strength is a multiple of the layer's mean residual norm

	// FromEnd, with positions "locus", are the prompt positions to steer counted from its end (0 =
	// its last token); default: those of the locus the vector was derived at.
	FromEnd []int `json:"positions_from_end"`
}

// maxSteering bounds a request's steering entries.
const maxSteering = 16

// maxAdditions bounds the additions (entry × layer) of one request: each is a pass over its rows
// at every step. Four per layer of the model, and at least maxSteering.
func (s *Server) maxAdditions() int { return max(maxSteering, 4*s.cfg.Model.Config.Layers) }

// maxLayersBytes bounds the JSON of a steering entry's layers: room for every layer of the model
// listed once with spaces, and more.
func maxLayersBytes(layers int) int { return 8*layers + 64 }

// resolve turns a request's steering list into the engine's additions. A layer named twice in
// one entry counts once, and a layers text longer than any list of distinct layers is refused
// before it is parsed; the additions of all entries together are capped.
func (s *Server) resolve(specs []steeringSpec) ([]engine.Addition, error) {
	c := s.cfg.Model.Config
	if len(specs) > maxSteering {
		return nil, bad("steering", "%d entries, at most %d", len(specs), maxSteering)
	}
	var out []engine.Addition
	for i, sp := range specs {
		param := func(f string) string { return fmt.Sprintf("steering[%d].%s", i, f) }
		if sp.Strength == nil {
			return nil, bad(param("strength"), "required").as("missing_required_parameter")
		}
		alpha := *sp.Strength
		if math.IsNaN(alpha) || math.IsInf(alpha, 0) || math.Abs(alpha) > 1e6 {
			return nil, bad(param("strength"), "%g: want a finite number of magnitude up to 1e6", alpha)
		}
		positions := sp.Positions
		if positions == "" {
			positions = "all"
		}
		span, err := engine.ParseSpan(positions)
		if positions == "locus" {
			span, err = engine.Prompt, nil
		} else if sp.FromEnd != nil {
			return nil, bad(param("positions_from_end"), "only with positions \"locus\"")
		}
		if err != nil {
			return nil, bad(param("positions"), "%q: want all, prompt, generated or locus", positions)
		}
		var layers []int
		if len(sp.Layers) > maxLayersBytes(c.Layers) {
			// Every layer named once fits with room to spare; a longer text only repeats itself.
			return nil, bad(param("layers"), "%d bytes for a model of %d layers (at most %d): name each layer or range once", len(sp.Layers), c.Layers, maxLayersBytes(c.Layers))
		}
		if len(sp.Layers) > 0 && string(sp.Layers) != "null" {
			if layers, err = parseLayers(sp.Layers, c.Layers); err != nil {
				return nil, bad(param("layers"), "%v", err)
			}
		}
		v, err := s.specVector(sp, param, layers)
		if err != nil {
			return nil, err
		}
		if layers == nil {
			layers = v.LayerIndices()
		}
		if len(out)+len(layers) > s.maxAdditions() {
			return nil, bad("steering", "more than %d layer additions in all (4 per layer of the model)", s.maxAdditions())
		}
		var fromEnd []int
		if positions == "locus" {
			if fromEnd, err = locusPositions(sp.FromEnd, v, c.MaxPositions); err != nil {
				return nil, bad(param("positions_from_end"), "%v", err)
			}
		}
		for _, l := range layers {
			dir, ok := v.Layer(l)
			if !ok {
				if len(v.Layers) != 1 {
					return nil, bad(param("layers"), "the vector has no direction for layer %d (it has layers %v)", l, v.LayerIndices())
				}
				dir = &v.Layers[0] // one direction: used at every layer asked for
			}
			a := alpha
			if sp.Relative {
				if dir.MeanNorm <= 0 {
					return nil, bad(param("relative"), "the vector records no residual norm for layer %d; give an absolute strength", dir.Index)
				}
				a *= dir.MeanNorm
			}
			if big := maxAbs(dir.Values); !finiteProduct(a, big) {
				return nil, bad(param("strength"), "%g × the vector's largest value %g at layer %d overflows float32", a, big, l)
			}
			out = append(out, engine.Addition{Point: v.PointName(l), Vector: dir.Values, Alpha: float32(a), Span: span, FromEnd: fromEnd})
		}
	}
	return out, nil
}

func maxAbs(x []float32) float32 {
	var m float32
	for _, v := range x {
		m = max(m, float32(math.Abs(float64(v))))
	}
	return m
}

// maxLocusPositions bounds the positions of a locus: attribution names at most 8.
const maxLocusPositions = 64

// locusPositions are the positions "locus" steers: those given, else those the vector was derived
// at; sorted, each once, each inside the model's context.
func locusPositions(given []int, v *steer.Vector, maxPositions int) ([]int, error) {
	ps := given
	if ps == nil {
		ps = v.Info.FromEnd
	}
	if len(ps) == 0 {
		return nil, fmt.Errorf("positions \"locus\" needs positions_from_end, or a vector derived at a locus")
	}
	if len(ps) > maxLocusPositions {
		return nil, fmt.Errorf("%d positions, at most %d", len(ps), maxLocusPositions)
	}
	for _, k := range ps {
		if k < 0 || k >= maxPositions {
			return nil, fmt.Errorf("position %d from the end: want 0 to %d", k, maxPositions-1)
		}
	}
	out := slices.Clone(ps)
	slices.Sort(out)
	return slices.Compact(out), nil
}

// specVector is the vector a steering entry names or gives inline.
func (s *Server) specVector(sp steeringSpec, param func(string) string, layers []int) (*steer.Vector, error) {
	c := s.cfg.Model.Config
	var name string
	if err := json.Unmarshal(sp.Vector, &name); err == nil {
		nv, ok := s.vector(name)
		if !ok {
			return nil, bad(param("vector"), "no vector named %q (GET /v1/vectors lists them)", name)
		}
		if sp.Hook != "" && sp.Hook != nv.vec.Hook {
			return nil, bad(param("hook"), "vector %q lives at %s", name, nv.vec.Hook)
		}
		return nv.vec, nil
	}
	var values []float64
	if err := json.Unmarshal(sp.Vector, &values); err != nil || len(sp.Vector) == 0 {
		return nil, bad(param("vector"), "want a vector's name or an array of hidden_size (%d) numbers", c.Dim)
	}
	dir, err := direction(param("vector"), values, c.Dim)
	if err != nil {
		return nil, err
	}
	if layers == nil {
		return nil, bad(param("layers"), "required with an inline vector")
	}
	hook := sp.Hook
	if hook == "" {
		hook = "hook_resid_post"
	}
	if !slices.Contains(steer.SteerableHooks, hook) {
		return nil, bad(param("hook"), "%q: want one of %s", hook, strings.Join(steer.SteerableHooks, ", "))
	}
	return &steer.Vector{Hook: hook, Layers: []steer.Layer{{Index: layers[0], Values: dir}}}, nil
}

// parseLayers reads "A-B", "L", "A,B-C", a number or an array of numbers, each layer in range,
// and returns the layers named, each once, in ascending order. Its work is linear in the text
// and its result at most n long, however often the text repeats a layer.
func parseLayers(raw json.RawMessage, n int) ([]int, error) {
	var str string
	var one int
	var list []int
	switch {
	case json.Unmarshal(raw, &str) == nil:
	case json.Unmarshal(raw, &one) == nil:
		list = []int{one}
	case json.Unmarshal(raw, &list) == nil:
		if len(list) == 0 {
			return nil, fmt.Errorf("empty list")
		}
	default:
		return nil, fmt.Errorf("want a layer, a range such as \"12-16\", or a list")
	}
	// A difference array: +1 where a range starts, −1 after it ends, so each part costs O(1).
	starts := make([]int, n+1)
	mark := func(a, b int) error { // layers a to b
		if a < 0 || b >= n {
			return fmt.Errorf("layer %d is out of range: the model has layers 0 to %d", max(b, a), n-1)
		}
		starts[a]++
		starts[b+1]--
		return nil
	}
	if list == nil {
		for _, part := range strings.Split(str, ",") {
			lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
			a, err1 := strconv.Atoi(lo)
			b, err2 := a, error(nil)
			if isRange {
				b, err2 = strconv.Atoi(hi)
			}
			if err1 != nil || err2 != nil || a > b {
				return nil, fmt.Errorf("%q: want a layer, a range A-B or a comma-separated list", str)
			}
			if err := mark(a, b); err != nil {
				return nil, err
			}
		}
	} else {
		for _, l := range list {
			if err := mark(l, l); err != nil {
				return nil, err
			}
		}
	}
	var out []int
	for l, depth := 0, 0; l < n; l++ {
		if depth += starts[l]; depth > 0 {
			out = append(out, l)
		}
	}
	return out, nil
}
