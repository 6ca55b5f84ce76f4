package steer

import (
	"math"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

// Perplexities measures fluency: for each prompt and its continuation, exp of the mean negative
// log-probability of the continuation's tokens, each given the prompt and the tokens before it,
// under the model with no hooks (so a steered text is judged by the unsteered model). An empty
// continuation gets NaN. The sequences run packed into passes of up to passTokens tokens (0: 512)
// and 128 logit rows, logits only at the rows that predict continuation tokens.
func Perplexities(r *llama.Runner, prompts, conts [][]int32, passTokens int) ([]float64, error) {
	if passTokens <= 0 {
		passTokens = 512
	}
	const maxRows = 128
	out := make([]float64, len(prompts))
	vocab := r.Model.Config.Vocab
	var kv *tensor.KVCache
	defer func() { r.FreeKVCache(kv) }() // a device's memory is not the garbage collector's
	for lo := 0; lo < len(prompts); {
		hi, n, rows, room := lo, 0, 0, 0
		for hi < len(prompts) {
			ln := len(prompts[hi]) + len(conts[hi])
			if hi > lo && (n+ln > passTokens || rows+len(conts[hi]) > maxRows) {
				break
			}
			n, rows, room = n+ln, rows+len(conts[hi]), room+(ln+15)/16*16
			hi++
		}
		kv = r.ReuseKVCache(kv, room, max(room, passTokens+16*(hi-lo)), 16)
		var b llama.Batch
		for i := lo; i < hi; i++ {
			p, c := prompts[i], conts[i]
			all := append(append(make([]int32, 0, len(p)+len(c)), p...), c...)
			for j, t := range all {
				b.Tokens = append(b.Tokens, t)
				b.Seq = append(b.Seq, int32(i-lo))
				b.Pos = append(b.Pos, int32(j))
				// Row j predicts token j+1: the continuation is predicted from the prompt's last
				// token to the one before the continuation's last.
				b.Logits = append(b.Logits, len(c) > 0 && j >= len(p)-1 && j < len(all)-1)
			}
		}
		var logits []float32
		if rows > 0 {
			t, err := r.Forward(b, kv, nil)
			if err != nil {
				return nil, err
			}
			logits = t.F32()
		}
		row := 0
		for i := lo; i < hi; i++ {
			c := conts[i]
			if len(c) == 0 {
				out[i] = math.NaN()
			} else {
				var nll float64
				for _, t := range c {
					nll -= llama.LogSoftmaxAt(logits[row*vocab:(row+1)*vocab], t)
					row++
				}
				out[i] = math.Exp(nll / float64(len(c)))
			}
			kv.Release(i - lo)
		}
		lo = hi
	}
	return out, nil
}
