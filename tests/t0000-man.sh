#!/bin/sh
# Every tool has a man page, mandoc's linter finds nothing in it, and its
# SYNOPSIS names every long option that the tool's usage names.
. "$(dirname "$0")/lib.sh"
for t in tools/*.c; do
	name=$(basename "$t" .c)
	page=man/man1/$name.1
	if [ ! -f "$page" ]; then fail "$name has a man page ($page)"; continue; fi
	if command -v mandoc >/dev/null; then
		if out=$(mandoc -Tlint -Wwarning "$page" 2>&1) && [ -z "$out" ]; then pass "$page is lint-free"
		else fail "$page is lint-free" "$out"; fi
	else
		skip "$page lint: mandoc not installed"
	fi
	if [ -x "bin/$name" ]; then
		missing=
		for o in $(bin/$name 2>&1 | grep -o -- '--[a-z-]*' | sort -u); do
			sed 's/\\//g' "$page" | grep -q -- "Fl ${o#-}" || missing="$missing $o"
		done
		if [ -z "$missing" ]; then pass "$page documents every option of $name's usage"
		else fail "$page lacks options:$missing"; fi
	fi
done
