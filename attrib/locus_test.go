package attrib

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLocusRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locus.json")
	want := Locus{Model: "m", Hook: "blocks.3.hook_resid_pre", Layer: 3, FromEnd: []int{0, 2}, Score: -1.5, Metric: "logprob", Pairs: "joy.jsonl", PairsSHA256: "ab"}
	if err := want.Write(path); err != nil {
		t.Fatal(err)
	}
	got, err := ReadLocus(path)
	if err != nil || got.Hook != want.Hook || got.Layer != 3 || len(got.FromEnd) != 2 || got.FromEnd[1] != 2 || got.Score != -1.5 {
		t.Errorf("read back %+v, %v", got, err)
	}
	for content, msg := range map[string]string{
		`{"hook": "blocks.1.hook_resid_pre", "layer": 1, "positions_from_end": [-1]}`: "positions_from_end has -1",
		`{"layer": 1}`:                          "needs a hook",
		`{"hook": "x", "layer": 1, "positions"`: "malformed JSON",
	} {
		os.WriteFile(path, []byte(content), 0o644)
		if _, err := ReadLocus(path); err == nil || !strings.Contains(err.Error(), msg) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v, want %q", content, err, msg)
		}
	}
}
