package tokenizer

import "strings"

// ChatTemplate returns a Jinja chat template, for tokenizer_config.json, that renders exactly what
// RenderChat writes in the given style (with the tokenizer's bos_token as <|begin_of_text|>), so
// that transformers' apply_chat_template and tiller agree on a checkpoint tiller wrote. The
// Llama31 one takes the date from the date_string variable, as Llama 3.1's own template does, and
// contains the "Cutting Knowledge Date" line that Load recognises the style by.
func ChatTemplate(style ChatStyle) string {
	var lead string
	switch style {
	case Llama3:
		lead = `{%- set turns = messages %}`
	case Llama31:
		lead = `{%- set today = date_string if date_string is defined else "` + defaultChatDate + `" %}
{%- if messages and messages[0]['role'] == 'system' %}
{%- set extra = messages[0]['content'] | trim %}
{%- set turns = messages[1:] %}
{%- else %}
{%- set extra = '' %}
{%- set turns = messages %}
{%- endif %}
{{- '<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: ' + today + '\n\n' + extra + '<|eot_id|>' }}`
	default:
		panic("tokenizer: ChatTemplate of unknown style " + style.String())
	}
	// Whitespace control ({%- and {{-) drops the newlines between tags, so the template's layout
	// does not leak into the prompt.
	return strings.Join([]string{
		`{{- bos_token }}`,
		lead,
		`{%- for turn in turns %}`,
		`{{- '<|start_header_id|>' + turn['role'] + '<|end_header_id|>\n\n' + turn['content'] | trim + '<|eot_id|>' }}`,
		`{%- endfor %}`,
		`{%- if add_generation_prompt %}`,
		`{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}`,
		`{%- endif %}`,
	}, "\n")
}
