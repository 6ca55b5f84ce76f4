package llama

import "math"

// InvFreq returns RoPE's inverse frequencies, one per rotated pair: inv_freq_i = θ^(−2i/D) for
// i = 0 … D/2−1, then rescaled by rope_scaling. The arithmetic follows Hugging Face's in F32 step
// by step, so that angles at long positions agree with it to the last bit where they can.
func (c *Config) InvFreq() []float32 {
	d := c.HeadDim
	inv := make([]float32, d/2)
	for i := range inv {
		e := float32(2*i) / float32(d)
		inv[i] = 1 / float32(math.Pow(c.RopeTheta, float64(e)))
	}
	s := c.RopeScaling
	switch s.Type {
	case "linear":
		// Positions divided by factor, which Hugging Face applies to the frequencies instead.
		for i := range inv {
			inv[i] /= float32(s.Factor)
		}
	case "llama3":
		// Wavelengths shorter than C/high keep their frequency, longer than C/low are slowed by
		// factor, and the band between is interpolated smoothly (Llama 3.1's long-context recipe).
		factor := float32(s.Factor)
		old := float32(s.OriginalMaxPositions)
		lowWavelen := old / float32(s.LowFreqFactor)
		highWavelen := old / float32(s.HighFreqFactor)
		for i, f := range inv {
			wavelen := float32(2*math.Pi) / f
			switch {
			case wavelen < highWavelen:
			case wavelen > lowWavelen:
				inv[i] = f / factor
			default:
				smooth := (old/wavelen - float32(s.LowFreqFactor)) / float32(s.HighFreqFactor-s.LowFreqFactor)
				inv[i] = (1-smooth)*f/factor + smooth*f
			}
		}
	}
	return inv
}
