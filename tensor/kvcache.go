package tensor

import "fmt"

// KVCache holds the keys and values of every layer for many sequences at once. Positions live in
// fixed-size blocks (paged, as in vLLM): position p of sequence s is row p%BlockSize of block
// table[s][p/BlockSize]. Sequences of different lengths share one pool of blocks without
// fragmentation, and releasing a sequence returns its blocks at once. Sequence ids are small
// integers chosen by the caller.
type KVCache struct {
	Layers, KVHeads, HeadDim, BlockSize int

	K, V []*Tensor // per layer: (blocks, BlockSize, KVHeads, HeadDim) F32 (or F64, BF16); row b*BlockSize+r is one position

	tables [][]int32 // per sequence: its blocks in position order
	free   []int32   // blocks no sequence holds, used from the end
}

// NewKVCache allocates blocks×blockSize positions for each of layers layers in b's memory.
func NewKVCache(b Backend, layers, kvHeads, headDim, blockSize, blocks int) *KVCache {
	if blockSize < 1 || blocks < 1 {
		panic(fmt.Sprintf("tensor: KV cache of %d blocks of %d positions", blocks, blockSize))
	}
	c := &KVCache{Layers: layers, KVHeads: kvHeads, HeadDim: headDim, BlockSize: blockSize}
	for l := 0; l < layers; l++ {
		c.K = append(c.K, b.Alloc(F32, blocks, blockSize, kvHeads, headDim))
		c.V = append(c.V, b.Alloc(F32, blocks, blockSize, kvHeads, headDim))
	}
	c.free = make([]int32, blocks)
	for i := range c.free {
		c.free[i] = int32(blocks - 1 - i) // so that blocks are handed out in ascending order
	}
	return c
}

// Blocks is the total number of blocks.
func (c *KVCache) Blocks() int { return c.K[0].Shape[0] }

// FreeBlocks is the number of blocks no sequence holds.
func (c *KVCache) FreeBlocks() int { return len(c.free) }

// Capacity is the number of positions sequence seq can hold without reserving more.
func (c *KVCache) Capacity(seq int) int {
	if seq < 0 || seq >= len(c.tables) {
		return 0
	}
	return len(c.tables[seq]) * c.BlockSize
}

// Reserve makes room for positions [0, positions) of sequence seq, taking blocks from the free
// pool. It fails, taking nothing, when too few blocks are free.
func (c *KVCache) Reserve(seq, positions int) error {
	if seq < 0 {
		panic(fmt.Sprintf("tensor: KV cache sequence id %d", seq))
	}
	for len(c.tables) <= seq {
		c.tables = append(c.tables, nil)
	}
	need := (positions+c.BlockSize-1)/c.BlockSize - len(c.tables[seq])
	if need <= 0 {
		return nil
	}
	if need > len(c.free) {
		return fmt.Errorf("KV cache full: sequence %d needs %d more blocks of %d positions, %d of %d are free",
			seq, need, c.BlockSize, len(c.free), c.Blocks())
	}
	for ; need > 0; need-- {
		b := c.free[len(c.free)-1]
		c.free = c.free[:len(c.free)-1]
		c.tables[seq] = append(c.tables[seq], b)
	}
	return nil
}

// Release returns every block of sequence seq to the free pool.
func (c *KVCache) Release(seq int) {
	if seq < 0 || seq >= len(c.tables) {
		return
	}
	c.free = append(c.free, c.tables[seq]...)
	c.tables[seq] = c.tables[seq][:0]
}

// Table returns the blocks of sequence seq in position order: position p is row p%BlockSize of
// block Table(seq)[p/BlockSize]. The slice is the cache's own, valid until the next Reserve or
// Release; device backends copy it to build their kernels' block tables.
func (c *KVCache) Table(seq int) []int32 {
	if seq < 0 || seq >= len(c.tables) {
		return nil
	}
	return c.tables[seq]
}

// Row is the cache row (of K[layer] and V[layer] seen as (rows, KVHeads·HeadDim)) that holds
// position pos of sequence seq; the position must be reserved.
func (c *KVCache) Row(seq, pos int32) int { return c.row(seq, pos) }

// row is the cache row that holds position pos of sequence seq; the position must be reserved.
func (c *KVCache) row(seq, pos int32) int {
	if int(seq) >= len(c.tables) || int(pos)/c.BlockSize >= len(c.tables[seq]) {
		panic(fmt.Sprintf("tensor: KV cache position %d of sequence %d is not reserved", pos, seq))
	}
	return int(c.tables[seq][int(pos)/c.BlockSize])*c.BlockSize + int(pos)%c.BlockSize
}

// NewKVCacheOf is NewKVCache for a cache of the given dtype: F32 as NewKVCache; F64 for a model run
// in F64 on the CPU (finite-difference tests); or, on the CPU, BF16 for F32 activations, which
// StoreKV rounds to bfloat16: half the memory, and half the bytes attention reads per position.
func NewKVCacheOf(b Backend, dtype DType, layers, kvHeads, headDim, blockSize, blocks int) *KVCache {
	if dtype == F32 {
		return NewKVCache(b, layers, kvHeads, headDim, blockSize, blocks)
	}
	// A cache of no layers is the block pool alone; the layers are then allocated in dtype.
	c := NewKVCache(b, 0, kvHeads, headDim, blockSize, blocks)
	c.Layers = layers
	for l := 0; l < layers; l++ {
		c.K = append(c.K, b.Alloc(dtype, blocks, blockSize, kvHeads, headDim))
		c.V = append(c.V, b.Alloc(dtype, blocks, blockSize, kvHeads, headDim))
	}
	return c
}

// DType is the dtype of the keys and values: the activations' dtype, or BF16.
func (c *KVCache) DType() DType {
	if len(c.K) == 0 {
		return F32
	}
	return c.K[0].DType
}
