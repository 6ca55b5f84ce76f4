package tokenizer

// byteToRune is GPT-2's byte-level alphabet, which Llama 3's tokenizer.json uses: every byte is
// written as one printable character so that a BPE vocabulary can be stored as JSON strings.
// Bytes that are already printable and not whitespace ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for
// themselves; the other 68 bytes, in increasing order, take U+0100, U+0101, … (so ' ' is 'Ġ',
// U+0120, and '\n' is 'Ċ', U+010A).
var byteToRune = func() [256]rune {
	var m [256]rune
	next := rune(256)
	for b := 0; b < 256; b++ {
		if printableLatin1(b) {
			m[b] = rune(b)
		} else {
			m[b] = next
			next++
		}
	}
	return m
}()

// printableLatin1 reports whether byte b is one of those GPT-2's alphabet keeps as itself.
func printableLatin1(b int) bool {
	return ('!' <= b && b <= '~') || (0xA1 <= b && b <= 0xAC) || (0xAE <= b && b <= 0xFF)
}
