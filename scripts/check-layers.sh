#!/usr/bin/env bash
# The repository's layering rules (docs/architecture.md), checked against
# what each package really depends on, directly or not (`go list -deps`).
# Test files are left out: a plugin's tests may use internal/ helpers.
#
#   - shared/ imports nothing from host/ or plugins/: it is the contract,
#     and a plugin author's build must not pull in the host.
#   - a plugin imports only shared (and shared/proto and shared/rawio
#     beneath it) and its own packages: the contract, and the SDK's
#     helpers, are all it may rely on.
#   - the host never imports a plugin: it knows plugins only as binaries.
#   - the simulator does not import the marketplace: it plays the other
#     side of the protocol, so it must not share the engine's reading of it.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
mod=$($GO list -m)
fail=0

# deps ROOT... prints "PACKAGE DEP" for every module package DEP that a
# package under ROOT depends on.
deps() {
	$GO list -deps -f '{{if not .Standard}}{{.ImportPath}}{{range .Deps}} {{.}}{{end}}{{end}}' "$@" |
		while read -r pkg rest; do
			case $pkg in "$mod"/*) ;; *) continue ;; esac
			for d in $rest; do
				case $d in "$mod"/*) echo "${pkg#"$mod"/} ${d#"$mod"/}" ;; esac
			done
		done
}

# refuse RULE ROOT DENY [ALLOW]: no package under ROOT may depend on a
# package matching the extended regexp DENY, unless it matches ALLOW.
refuse() {
	local rule=$1 root=$2 deny=$3 allow=${4:-} out
	out=$(deps "./$root/..." | awk -v root="$root" -v deny="^($deny)$" -v allow="^($allow)$" \
		'(index($1, root "/") == 1 || $1 == root) && $2 ~ deny && !(allow != "^()$" && $2 ~ allow) { print "  " $1 " depends on " $2 }' | sort -u)
	if [ -n "$out" ]; then
		echo "layering: $rule"
		echo "$out"
		fail=1
	fi
}

refuse "shared/ imports nothing from host/ or plugins/" shared '(host|plugins)(/.*)?'
refuse "the host never imports a plugin (it knows plugins only as binaries)" host 'plugins(/.*)?'
refuse "the simulator does not import the marketplace" host/simulator 'host/marketplace(/.*)?'
for dir in plugins/*/; do
	name=$(basename "$dir")
	refuse "plugin $name imports only shared and its own packages" "plugins/$name" \
		'.*' "shared|shared/proto|shared/rawio|plugins/$name(/.*)?"
done
exit $fail
