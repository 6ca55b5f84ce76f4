package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// Stream decodes ids one at a time as a model generates them and hands out text only once it is
// complete: a character whose UTF-8 bytes are spread over several byte-level tokens (an emoji is
// often four) comes out whole, with the token that completes it.
//
// It uses the offset method of HF text-generation-inference: the ids since prefix are decoded
// twice, with and without the ones not yet emitted (from read on), and the difference is emitted
// unless it ends in U+FFFD, the mark of an unfinished character. Decoding from prefix rather than
// from read gives the decoder the last emitted piece as context, which decoders that strip a
// leading space at the start of their input (SentencePiece's Metaspace) need. Each Add decodes a
// window of a few tokens, so the cost per token does not grow with the length of the generation.
//
// The concatenation of everything Add and Flush return equals Decode of all the ids, except where
// the ids hold bytes that never form valid UTF-8 (see maxPending).
type Stream struct {
	t           *Tokenizer
	skipSpecial bool
	ids         []uint32 // the window: ids[prefix:] are all that future decodes need
	prefix      int      // start of the context for the next decode
	read        int      // ids[:read] have been emitted
}

// maxPending bounds the ids held back waiting for a character to complete. A UTF-8 character is at
// most 4 bytes, hence at most 4 byte tokens; 16 leaves room for decoders that spend more tokens per
// byte. Past the bound the U+FFFD is final and is emitted, which keeps the window, and the cost of
// each Add, bounded even when a model emits garbage bytes forever. Such garbage may then show a
// different number of U+FFFD than Decode of the whole sequence would.
const maxPending = 16

// NewStream starts a stream decode; skipSpecial is as in Decode.
func (t *Tokenizer) NewStream(skipSpecial bool) *Stream {
	return &Stream{t: t, skipSpecial: skipSpecial}
}

// Add appends id and returns the text that it completes, often "" (a partial character, or a
// token that adds no text).
func (s *Stream) Add(id int32) string {
	if id < 0 {
		return "" // Decode skips unknown ids; so does the stream
	}
	s.ids = append(s.ids, uint32(id))
	return s.emit(false)
}

// Flush returns whatever Add held back (the bytes of an unfinished character, as U+FFFD) and
// starts a fresh window; call it when generation ends.
func (s *Stream) Flush() string {
	return s.emit(true)
}

// emit returns the text of the window past read, if it is complete or force is set, and moves the
// offsets past it.
func (s *Stream) emit(force bool) string {
	if s.read == len(s.ids) {
		return ""
	}
	before := s.decode(s.ids[s.prefix:s.read])
	after := s.decode(s.ids[s.prefix:])
	unfinished := strings.HasSuffix(after, string(utf8.RuneError))
	if !force && len(s.ids)-s.read < maxPending && (len(after) <= len(before) || unfinished) {
		return ""
	}
	// The text is cut by length, as in TGI: a decoder that rewrote the context would otherwise
	// make us re-emit it.
	var text string
	if len(after) > len(before) {
		text = after[len(before):]
	}
	s.prefix, s.read = s.read, len(s.ids)
	// Drop ids before prefix now and then, so the window stays small at O(1) amortised cost.
	if s.prefix > 64 && s.prefix > len(s.ids)/2 {
		n := copy(s.ids, s.ids[s.prefix:])
		s.ids = s.ids[:n]
		s.read -= s.prefix
		s.prefix = 0
	}
	return text
}

func (s *Stream) decode(ids []uint32) string {
	if len(ids) == 0 {
		return ""
	}
	return s.t.decodeRaw(ids, s.skipSpecial)
}
