package scanner

import "github.com/microengine/microengine/shared"

// EICARFamily is what clamd reports for the EICAR test file with the
// repo's shipped signature (testdata/signatures/microengine.hdb). A clamd
// running the official database reports "Win.Test.EICAR_HDB-1", without the
// suffix clamd gives unofficial signatures.
const EICARFamily = "Win.Test.EICAR_HDB-1.UNOFFICIAL"

// The EICAR test string in two halves, joined at run time, so that neither
// this package's source nor the plugin binary holds it whole for other
// scanners to flag.
const (
	eicarHead = `X5O!P%@AP[4\PZX54(P^)7CC)7}$`
	eicarTail = `EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`
)

// EICAR returns the standard 68-byte EICAR anti-malware test file.
func EICAR() []byte {
	b := make([]byte, 0, len(eicarHead)+len(eicarTail))
	b = append(b, eicarHead...)
	return append(b, eicarTail...)
}

// benignSample is plain text that no signature matches.
const benignSample = "microengine clamav plugin: a clean sample, nothing to see here.\n"

// Samples are what the plugin vouches for in Info: the conformance suite
// scans them against the configured clamd.
func Samples() []shared.Sample {
	return []shared.Sample{
		{Name: "eicar.com", Type: shared.ArtifactFile, Content: EICAR(), Verdict: shared.VerdictMalicious, MalwareFamily: EICARFamily},
		{Name: "clean.txt", Type: shared.ArtifactFile, Content: []byte(benignSample), Verdict: shared.VerdictBenign},
	}
}
