#!/bin/sh
# Fail if a guest contains an instruction the host's emulating KVM can't run.
# Usage: check-insns.sh build/*.elf   (vmcall is allowed only in vmcall*.elf)
OBJDUMP=${OBJDUMP:-objdump}

# Mnemonics (whole first word of the instruction text).
BAD='int3|int|into|int1|icebp|popcnt|lzcnt|tzcnt|andn|bextr|blsi|blsmsk|blsr|bzhi|mulx|pdep|pext|rorx|sarx|shlx|shrx|crc32[bwlq]?|rdtscp|rdpid|xgetbv|xsetbv|xsave.*|xrstor.*|fxsave.*|fxrstor.*|monitor.*|mwait.*|stac|clac|cmpxchg16b|movbe|endbr64|endbr32|emms|ldmxcsr|stmxcsr|f[a-z0-9]*|wait'
# Operands: SSE/AVX/x87/MMX registers.
BADREG='%[xyz]mm[0-9]|%st|%mm[0-9]'

status=0
for elf in "$@"; do
	case "$(basename "$elf")" in
	vmcall*) bad="$BAD" ;;
	*) bad="$BAD|vmcall" ;;
	esac
	# objdump -d lines: "  addr:\tbytes\tmnemonic operands"
	hits=$($OBJDUMP -d --no-show-raw-insn "$elf" |
		awk -F'\t' 'NF >= 2 && $1 ~ /^ *[0-9a-f]+:$/ { print $1 "\t" $2 }' |
		grep -E "	(lock |rep[a-z]* |data16 |cs |ds |notrack |bnd )*($bad)( |\$)|$BADREG")
	if [ -n "$hits" ]; then
		echo "$elf: $(echo "$hits" | wc -l) forbidden instruction(s):"
		echo "$hits" | head -40
		status=1
	fi
done
[ $status = 0 ] && echo "check-insns: $# guest(s) clean"
exit $status
