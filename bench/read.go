package bench

// readWordsGo folds v with eight independent XORs: the portable read loop.
func readWordsGo(v []uint64) uint64 {
	var s0, s1, s2, s3, s4, s5, s6, s7 uint64
	for len(v) >= 8 {
		s0 ^= v[0]
		s1 ^= v[1]
		s2 ^= v[2]
		s3 ^= v[3]
		s4 ^= v[4]
		s5 ^= v[5]
		s6 ^= v[6]
		s7 ^= v[7]
		v = v[8:]
	}
	for _, x := range v {
		s0 ^= x
	}
	return s0 ^ s1 ^ s2 ^ s3 ^ s4 ^ s5 ^ s6 ^ s7
}
