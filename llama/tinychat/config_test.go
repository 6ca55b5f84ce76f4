package tinychat_test

import (
	"testing"

	"github.com/tillerlm/tiller/llama/chat"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/tinychat"
	"github.com/tillerlm/tiller/llama/tokenizer"
)

// TestConfig checks the proposed model against the budget of issue 8 and against the tokenizer:
// bf16 weights of at most 10 MB, room in the context for the longest conversation and a reply,
// and the special ids of tokenizer.json.
func TestConfig(t *testing.T) {
	cfg, err := llama.ReadConfig(".")
	if err != nil {
		t.Fatal(err)
	}
	tk, err := tokenizer.Load(".")
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	if cfg.Vocab != tk.VocabSize() {
		t.Errorf("vocab_size %d, tokenizer has %d ids", cfg.Vocab, tk.VocabSize())
	}
	bos, _ := tk.BOS()
	eot, _ := tk.TokenID(tokenizer.EndOfTurn)
	eot2, _ := tk.TokenID(tokenizer.EndOfText)
	if cfg.BOS != int(bos) || len(cfg.EOS) != 2 || cfg.EOS[0] != int(eot2) || cfg.EOS[1] != int(eot) {
		t.Errorf("bos %d, eos %v; want %d and [%d %d]", cfg.BOS, cfg.EOS, bos, eot2, eot)
	}
	if cfg.Heads != 4 || cfg.KVHeads != 2 || !cfg.TieEmbeddings || cfg.RopeScaling.Type != "" {
		t.Errorf("want 4 query and 2 kv heads, tied embeddings, plain RoPE: %+v", cfg)
	}
	const wantParams = 1443456
	params := cfg.Params()
	if params != wantParams {
		t.Errorf("%d parameters, the README says %d", params, wantParams)
	}
	if bytes := 2 * params; bytes > 10_000_000 {
		t.Errorf("bf16 weights take %d bytes, over the 10 MB budget", bytes)
	}
	longest := 0
	for _, c := range tinychat.Corpus(tinychat.DefaultSeed, 2000) {
		ids, err := tk.EncodeChat([]chat.Message{{Role: "user", Content: c.User().Content}}, true)
		if err != nil {
			t.Fatal(err)
		}
		longest = max(longest, len(ids))
	}
	if longest+128 > cfg.MaxPositions {
		t.Errorf("the longest prompt has %d tokens; with 128 to generate that passes max_position_embeddings %d", longest, cfg.MaxPositions)
	}
}
