package engine

import (
	"crypto/sha256"
	"slices"

	"github.com/tillerlm/tiller/tensor"
)

// prefixCache keeps the keys and values of prompts that ran before, whole blocks at a time, so a
// request whose prompt starts the same way (a shared system message, the earlier turns of a
// conversation, the n choices of one request) skips their prefill.
//
// Each entry is a sequence of its own in the engine's KV cache, holding copies of the first full
// blocks of a prompt. tensor.KVCache gives every sequence its own block table and frees blocks on
// Release without counting references, so blocks cannot be shared between tables; a hit instead
// copies the entry's blocks into the new sequence's own (layers × 2 block copies, a memcpy each,
// far cheaper than the prefill they replace). Entries hold blocks of the common pool and are
// evicted, least recently used first, whenever a request or a newer entry needs the room.
//
// The cache never holds a prompt's last token: its logits choose the first generated token, so
// it always runs. That is also why steering of Span Generated, which touches only that token among
// the prompt's, does not enter the key.
type prefixCache struct {
	maxBlocks int // blocks the entries may hold together; 0 turns the cache off
	blocks    int // blocks the entries hold now
	entries   []*prefixEntry
	clock     int64 // use counter for least-recently-used eviction
}

type prefixEntry struct {
	seq    int32             // its sequence id in the KV cache
	key    [sha256.Size]byte // prefixKey of the steering it was computed under
	tokens []int32           // (blocks·BlockSize) the prompt tokens its blocks hold
	used   int64             // clock at the last hit or insertion
}

// lookup returns the entry sharing the longest whole-block prefix with prompt under key, and how
// many of its blocks apply: at most (len(prompt)-1)/blockSize, so the last token still runs.
func (c *prefixCache) lookup(key [sha256.Size]byte, prompt []int32, blockSize int) (*prefixEntry, int) {
	var best *prefixEntry
	bestBlocks := 0
	limit := (len(prompt) - 1) / blockSize
	for _, e := range c.entries {
		if e.key != key {
			continue
		}
		n := 0
		for n < min(limit, len(e.tokens)/blockSize) && slices.Equal(e.tokens[n*blockSize:(n+1)*blockSize], prompt[n*blockSize:(n+1)*blockSize]) {
			n++
		}
		if n > bestBlocks {
			best, bestBlocks = e, n
		}
	}
	return best, bestBlocks
}

// covered reports whether an entry under key already holds the first n blocks of prompt.
func (c *prefixCache) covered(key [sha256.Size]byte, prompt []int32, blockSize, n int) bool {
	for _, e := range c.entries {
		if e.key == key && len(e.tokens) >= n*blockSize && slices.Equal(e.tokens[:n*blockSize], prompt[:n*blockSize]) {
			return true
		}
	}
	return false
}

// touch marks e as just used.
func (c *prefixCache) touch(e *prefixEntry) {
	c.clock++
	e.used = c.clock
}

// evictOldest removes the least recently used entry other than keep, releasing its blocks; it
// reports false when there is none.
func (c *prefixCache) evictOldest(kv *tensor.KVCache, keep *prefixEntry, free func(seq int32)) bool {
	oldest := -1
	for i, e := range c.entries {
		if e != keep && (oldest < 0 || e.used < c.entries[oldest].used) {
			oldest = i
		}
	}
	if oldest < 0 {
		return false
	}
	e := c.entries[oldest]
	c.blocks -= len(kv.Table(int(e.seq)))
	kv.Release(int(e.seq))
	free(e.seq)
	c.entries = slices.Delete(c.entries, oldest, oldest+1)
	return true
}

// copyBlocks copies the first n blocks of sequence src into the first n blocks of dst, in every
// layer; both must hold them. The cache must be in host memory.
func copyBlocks(kv *tensor.KVCache, dst, src int32, n int) {
	from, to := kv.Table(int(src)), kv.Table(int(dst))
	for l := 0; l < kv.Layers; l++ {
		for _, t := range []*tensor.Tensor{kv.K[l], kv.V[l]} {
			block := len(t.Data) / t.Shape[0] // bytes of one block: (BlockSize, KVHeads, HeadDim)
			for i := 0; i < n; i++ {
				copy(t.Data[int(to[i])*block:int(to[i]+1)*block], t.Data[int(from[i])*block:int(from[i]+1)*block])
			}
		}
	}
}
