// Package eicarscan is the scan the test plugins share: each reads its
// artifact whole and recognises EICAR as the eicar plugin does, so the
// host's tests get real verdicts from them around their own faults.
package eicarscan

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/microengine/microengine/shared"
)

const eicar = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

// maxContent bounds what a scan reads: a test plugin holds its artifact
// whole, and the tests' artifacts are small.
const maxContent = 64 << 20

// Scan reads a's content and answers malicious when it holds EICAR, benign
// otherwise; a read that fails or comes short answers unknown. inspect,
// when not nil, sees the content before the verdict (the crasher's
// markers act there).
func Scan(ctx context.Context, a shared.Artifact, inspect func(content []byte)) (shared.Result, error) {
	content, err := io.ReadAll(io.LimitReader(a.Content, maxContent))
	if err != nil {
		if ctx.Err() != nil {
			return shared.Result{}, fmt.Errorf("scan: %w", ctx.Err())
		}
		return shared.Unknown("read: %v", err), nil
	}
	if a.Size >= 0 && int64(len(content)) != a.Size {
		return shared.Unknown("read %d bytes of %d", len(content), a.Size), nil
	}
	if inspect != nil {
		inspect(content)
	}
	if bytes.Contains(content, []byte(eicar)) {
		return shared.Result{Verdict: shared.VerdictMalicious, Confidence: 1, MalwareFamily: "EICAR-Test-File"}, nil
	}
	return shared.Result{Verdict: shared.VerdictBenign, Confidence: 1}, nil
}
