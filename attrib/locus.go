// Package attrib finds where in a model a behaviour is decided: attribution patching (AtP and its
// AtP* corrections) over pairs of clean and corrupted prompts, exact activation patching as ground
// truth, and the recommended intervention locus that steering consumes.
package attrib

import (
	"encoding/json"
	"fmt"
	"os"
)

// Locus is where attribution recommends intervening, as written to locus.json and read by
// `tiller derive` and `tiller steer`: a hook point (its layer is the locus layer) and the token
// positions that carried the effect, counted from the end of the prompt (0 = the last token), so
// that they carry over to prompts of other lengths (STAR's localized injection).
type Locus struct {
	Model       string  `json:"model"`              // the model folder attribution ran on
	Hook        string  `json:"hook"`               // e.g. "blocks.12.hook_resid_pre"
	Layer       int     `json:"layer"`              // the hook's layer
	FromEnd     []int   `json:"positions_from_end"` // 0 = last prompt token, 1 = the one before, …
	Score       float64 `json:"score"`              // the attribution score that chose this locus
	Metric      string  `json:"metric"`             // the metric attribution used
	Pairs       string  `json:"pairs"`              // the pair file
	PairsSHA256 string  `json:"pairs_sha256"`       // its hash, so a stale locus can be told
	// Rule is how attribution chose the locus (LocusRule), and LayerScores the per-layer totals it
	// compared; both are for readers and optional.
	Rule        string    `json:"rule,omitempty"`
	LayerScores []float64 `json:"layer_scores,omitempty"`
}

// ReadLocus reads and validates a locus.json.
func ReadLocus(path string) (*Locus, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var l Locus
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("%s: malformed JSON: %v", path, err)
	}
	if l.Hook == "" || l.Layer < 0 {
		return nil, fmt.Errorf("%s: a locus needs a hook and a layer >= 0", path)
	}
	for _, p := range l.FromEnd {
		if p < 0 {
			return nil, fmt.Errorf("%s: positions_from_end has %d, want >= 0", path, p)
		}
	}
	return &l, nil
}

// Write saves the locus as indented JSON.
func (l *Locus) Write(path string) error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
