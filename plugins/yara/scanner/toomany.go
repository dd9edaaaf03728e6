package scanner

/*
#include <yara.h>

// first_truncated_string returns the index of the first string whose
// matches libyara stopped recording (YR_MAX_STRING_MATCHES reached), or -1.
// libyara 4.2 sets the string's bit in strings_temp_disabled when the
// callback answers CALLBACK_MSG_TOO_MANY_MATCHES with CALLBACK_CONTINUE
// (what go-yara v4.2.4 answers to a message it does not know), and clears
// the bitmask at the start of the next scan.
static int64_t first_truncated_string(YR_SCAN_CONTEXT* ctx) {
	uint32_t n = ctx->rules->num_strings;
	uint32_t slots = YR_BITMASK_SIZE(n);
	for (uint32_t s = 0; s < slots; s++) {
		YR_BITMASK w = ctx->strings_temp_disabled[s];
		if (w == 0)
			continue;
		for (uint32_t b = 0; b < YR_BITMASK_SLOT_BITS; b++) {
			uint32_t i = s * YR_BITMASK_SLOT_BITS + b;
			if (i < n && (w & (1UL << b)))
				return i;
		}
	}
	return -1;
}

static const char* string_identifier(YR_SCAN_CONTEXT* ctx, uint32_t i) {
	return ctx->rules->strings_table[i].identifier;
}

static const char* string_rule_namespace(YR_SCAN_CONTEXT* ctx, uint32_t i) {
	return ctx->rules->rules_table[ctx->rules->strings_table[i].rule_idx].ns->name;
}

static const char* string_rule_identifier(YR_SCAN_CONTEXT* ctx, uint32_t i) {
	return ctx->rules->rules_table[ctx->rules->strings_table[i].rule_idx].identifier;
}
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/hillu/go-yara/v4"
)

// MaxStringMatches is libyara's cap on the matches recorded for one string
// (YR_MAX_STRING_MATCHES).
const MaxStringMatches = C.YR_MAX_STRING_MATCHES

// go-yara v4.2.4 hides the YR_SCAN_CONTEXT behind ScanContext's one
// unexported pointer field (cptr). These two constants stop the build if a
// go-yara upgrade changes that layout: each is negative, which no uint
// constant may be, unless the sizes are equal.
const (
	_ = uint(unsafe.Sizeof(yara.ScanContext{}) - unsafe.Sizeof(uintptr(0)))
	_ = uint(unsafe.Sizeof(uintptr(0)) - unsafe.Sizeof(yara.ScanContext{}))
)

// truncatedString names the first string of the finished scan whose matches
// libyara stopped recording at MaxStringMatches ("namespace:rule $a"), or "".
//
// libyara 4.2 signals that through CALLBACK_MSG_TOO_MANY_MATCHES, and
// go-yara v4.2.4's callback has no case for it: it answers
// CALLBACK_CONTINUE, libyara disables the string for the rest of the scan
// and the scan returns ERROR_SUCCESS. Every count, offset and condition on
// that string then sees a truncated list (a rule "#a > 1000001" does not
// match where it should), so the verdict cannot be trusted. The only trace
// left is the string's bit in the context's strings_temp_disabled bitmask,
// which CALLBACK_MSG_SCAN_FINISHED still sees (libyara clears it when the
// next scan starts).
func truncatedString(sc *yara.ScanContext) string {
	ctx := *(**C.YR_SCAN_CONTEXT)(unsafe.Pointer(sc))
	if ctx == nil {
		return ""
	}
	i := C.first_truncated_string(ctx)
	if i < 0 {
		return ""
	}
	u := C.uint32_t(i)
	return fmt.Sprintf("%s:%s %s", C.GoString(C.string_rule_namespace(ctx, u)),
		C.GoString(C.string_rule_identifier(ctx, u)), C.GoString(C.string_identifier(ctx, u)))
}
