package tokenizer

import "fmt"

// Names of the Llama 3 special tokens that the chat format and generation use.
const (
	BeginOfText   = "<|begin_of_text|>"
	EndOfText     = "<|end_of_text|>"
	StartHeaderID = "<|start_header_id|>"
	EndHeaderID   = "<|end_header_id|>"
	EndOfMessage  = "<|eom_id|>"
	EndOfTurn     = "<|eot_id|>"
	PythonTag     = "<|python_tag|>"
)

// llama3SpecialCount is how many special tokens Llama 3 reserves, at the top of its id range
// (ids 128000 … 128255 for its 128000-token BPE vocabulary).
const llama3SpecialCount = 256

// Llama3SpecialTokens returns Llama 3's 256 special tokens in id order: entry i has id 128000+i
// in Llama 3. The named ones sit among the first eleven; every other slot is
// <|reserved_special_token_N|> with N counting up from 0 across the gaps, ending at 247.
func Llama3SpecialTokens() []string {
	named := []string{
		BeginOfText,                    // 128000
		EndOfText,                      // 128001
		"<|reserved_special_token_0|>", // 128002
		"<|reserved_special_token_1|>", // 128003
		"<|finetune_right_pad_id|>",    // 128004
		"<|reserved_special_token_2|>", // 128005
		StartHeaderID,                  // 128006
		EndHeaderID,                    // 128007
		EndOfMessage,                   // 128008
		EndOfTurn,                      // 128009
		PythonTag,                      // 128010
	}
	toks := make([]string, 0, llama3SpecialCount)
	toks = append(toks, named...)
	for n := 3; len(toks) < llama3SpecialCount; n++ {
		toks = append(toks, fmt.Sprintf("<|reserved_special_token_%d|>", n))
	}
	return toks
}
