//go:build cuda

package gpu

import "fmt"

// Graph is a recorded sequence of launches on the backend's stream, replayed with one call: a
// decode step of ~350 kernels costs one launch instead of ~350 (DESIGN.md: "Decode runs as one
// captured CUDA graph per step shape"). What it records are addresses and sizes, so a replay
// reads whatever the recorded device buffers hold then — inputs that change per step (token,
// position) must live in device memory, written by kernels of the graph itself or copied in
// before Launch.
type Graph struct {
	b    *Backend
	exec *graphExec
}

// Capture records the launches fn queues (without running them) into a Graph. fn must not
// synchronise, download, stage host arrays or load new kernels; warm it up once first so that
// every module is loaded.
func (b *Backend) Capture(fn func()) (g *Graph, err error) {
	defer b.enter()()
	if err := beginCapture(b.stream); err != nil {
		return nil, fmt.Errorf("gpu: %v", err)
	}
	b.capturing = true
	defer func() {
		b.capturing = false
		if r := recover(); r != nil {
			endCapture(b.stream) // abandon the recording; the stream is usable again
			err = fmt.Errorf("gpu: during graph capture: %v", r)
		}
	}()
	fn()
	exec, err := endCapture(b.stream)
	if err != nil {
		return nil, fmt.Errorf("gpu: %v", err)
	}
	return &Graph{b: b, exec: exec}, nil
}

// Launch queues one replay of the graph on the backend's stream.
func (g *Graph) Launch() error {
	defer g.b.enter()()
	if err := g.exec.launch(g.b.stream); err != nil {
		return fmt.Errorf("gpu: %v", err)
	}
	return nil
}

// Close frees the graph.
func (g *Graph) Close() {
	defer g.b.enter()()
	g.exec.destroy()
}
