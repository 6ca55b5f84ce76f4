package chat

import _ "embed"

// The templates tiller writes into the checkpoints it makes (tiller init, the embedded tiny-chat
// model). They are the team's own, checked against transformers with every other fixture.
var (
	//go:embed templates/llama3.jinja
	llama3 string
	//go:embed templates/llama31.jinja
	llama31 string
)

// Llama3 returns a template that writes Llama 3's chat format: <|begin_of_text|>, then per message
// <|start_header_id|>{role}<|end_header_id|>\n\n{content, trimmed}<|eot_id|>.
func Llama3() string { return llama3 }

// Llama31 returns a template that writes Llama 3.1's: Llama 3's format behind a system block that
// always comes first, dated ("Cutting Knowledge Date: December 2023\nToday Date: {date_string,
// default 26 Jul 2024}\n\n") and holding the leading system message's content, with tools
// described in the first user turn (or the system block, with tools_in_user_message false), tool
// calls written as JSON and tool results in ipython turns.
func Llama31() string { return llama31 }
