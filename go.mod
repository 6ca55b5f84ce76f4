module github.com/tillerlm/tiller

go 1.26.8

require (
	github.com/daulet/tokenizers v1.22.1
	github.com/x448/float16 v0.8.4
	golang.org/x/sys v0.50.0
	gorgonia.org/cu v0.9.6
)

require (
	github.com/google/uuid v1.1.1 // indirect
	github.com/pkg/errors v0.9.1 // indirect
)
