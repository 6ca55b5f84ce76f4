package server

import (
	"fmt"
	"net/http"
	"sync"

	"github.com/tillerlm/tiller/steer"
	"github.com/tillerlm/tiller/steer/data"
)

// maxScoreTexts bounds the texts one POST /v1/scores may ask for; the body limit bounds their size.
const maxScoreTexts = 64

// scoreRequest is the body of POST /v1/scores: texts to measure as `tiller eval` measures replies.
type scoreRequest struct {
	Texts []string `json:"texts"`
}

// scoreTexts answers POST /v1/scores with each text's VADER compound sentiment, emotion-word rates
// of the server's lexicon and first-person pronoun rate (steer.Score): the measures `tiller eval`
// reports, for replies a client generated. It reads nothing but the request.
func (s *Server) scoreTexts(w http.ResponseWriter, r *http.Request) {
	data, err := s.body(w, r)
	if err != nil {
		s.fail(w, err)
		return
	}
	var req scoreRequest
	if err := decode(data, &req); err != nil {
		s.fail(w, err)
		return
	}
	switch {
	case req.Texts == nil:
		s.fail(w, bad("texts", "required: a list of strings"))
		return
	case len(req.Texts) > maxScoreTexts:
		s.fail(w, bad("texts", "%d texts, at most %d", len(req.Texts), maxScoreTexts))
		return
	}
	out := make([]steer.Scores, len(req.Texts))
	for i, t := range req.Texts {
		out[i] = steer.Score(t, s.lexicon())
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "lexicon": s.lexiconName(), "data": out})
}

var (
	starterOnce sync.Once
	starter     *steer.Lexicon
)

// lexicon is the configured lexicon, or the shipped starter lexicon (joy and trust).
func (s *Server) lexicon() *steer.Lexicon {
	if s.cfg.Lexicon != nil {
		return s.cfg.Lexicon
	}
	starterOnce.Do(func() {
		b, file, _ := data.File(data.Lexicon)
		lx, err := steer.ParseLexicon(file, b)
		if err != nil {
			panic(fmt.Sprintf("server: the shipped lexicon: %v", err))
		}
		starter = lx
	})
	return starter
}

func (s *Server) lexiconName() string {
	if s.cfg.Lexicon != nil {
		return s.cfg.LexiconName
	}
	_, file, _ := data.File(data.Lexicon)
	return file
}
