package bench

import (
	"os"
	"testing"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

// BenchmarkTrainStepTinyChat times one training step (forward, backward, AdamW) of the tiny chat
// model's config on a batch of 16 sequences of 48 tokens, the corpus's mean length.
func BenchmarkTrainStepTinyChat(b *testing.B) {
	raw, err := os.ReadFile("../llama/tinychat/config.json")
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := llama.ParseConfig(raw)
	if err != nil {
		b.Fatal(err)
	}
	m, err := llama.NewRandom(cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	be := tensor.NewCPU(2)
	defer be.Close()
	r := llama.NewRunner(m, be)
	seqs := make([][]int32, 16)
	for i := range seqs {
		for p := 0; p < 48; p++ {
			seqs[i] = append(seqs[i], int32((i*131+p*17)%2032))
		}
	}
	b.ResetTimer()
	err = llama.Train(r, seqs, nil, llama.TrainOptions{Steps: b.N, Batch: 16, SeqLen: 48, LR: 1e-3, Warmup: 1})
	if err != nil {
		b.Fatal(err)
	}
	tokens := float64(16 * 47 * b.N)
	b.ReportMetric(tokens/b.Elapsed().Seconds(), "tok/s")
	b.ReportMetric(6*float64(cfg.Params())*tokens/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}
