#!/usr/bin/env bash
# Mutation check: applies deliberate one-line bugs (scripts/mutations.txt) one at a time, rebuilds, runs the test
# suites meant to catch each, and reports which bugs survive. Not run by CI (a release rebuild per mutation takes
# minutes); run it before closing an issue and add mutations as the code grows. scripts/test.sh is CI's.
#
# Usage: scripts/mutate.sh [options]
#   --list              list the mutations (id, area, suites, what a user would notice) and exit
#   --check             check, without building, that each original text occurs exactly once in the caller's
#                       working tree (run it after editing the list or the sources); exit 1 if any is stale
#   --only ID,ID,...    run only these mutations (default: all)
#   --area AREA,...     run only the mutations of these areas (Optim, Runner, Distributed, Model, Data, ASR, ...)
#   --scratch DIR       the scratch clone the mutations are applied in (default: /tmp/speechain-mutate); its .build
#                       is kept between runs, so rebuilds are incremental. The caller's checkout is never touched.
#   --out DIR           where mutation-report.md and the per-mutation logs go (default: <scratch>-report)
#   --working-tree      sync the caller's uncommitted and untracked files too (default: the caller's HEAD only)
#   --no-baseline       skip the unmutated build and run of the selected suites (by default they must pass first,
#                       or no CAUGHT would mean anything)
#   --timeout SECONDS   limit on each mutation's test run (default 1200); a run past it is TIMEOUT (counted as caught)
#   --build-timeout S   limit on each build (default 2400)
#   --max-minutes M     start no mutation after M minutes (the rest are reported NOT-RUN); creating the file
#                       <scratch>.stop does the same at once (the mutation under way finishes first)
#   --mutations FILE    the list (default: scripts/mutations.txt of the caller's checkout)
#   -h, --help          this text
#
# Each mutation in the list is a block of `key: value` lines, blocks separated by blank lines, `#` comments:
#   id:      a short unique name (OPT-ADAM-BC2)
#   area:    Optim, Runner, Distributed, Model, Data, ASR, Speech, Config, Numerics, CLI
#   file:    the source file, relative to the repository root
#   suites:  the swift-testing suites that should catch it, space-separated (e.g. `GradScalerTests ResumeTests`);
#            they become the --filter regex `\.(A|B)(/|$)`; or `filter:` gives the regex itself
#   notice:  one line: what a user would notice if this bug shipped
#   -<TAB or space>original text (exact, one line, must occur exactly once in the file; leading whitespace optional)
#   +<TAB or space>replacement text (may be empty: `+` alone deletes the original text)
# A mutation whose original text no longer occurs exactly once is reported STALE (fix its text) and skipped;
# matching by text, not line number, keeps the list valid as the code around it moves.
#
# Results: CAUGHT (the suites fail), SURVIVED (they pass: a gap in the tests), BUILD-FAILED (the mutation does not
# compile: fix the mutation), STALE, TIMEOUT (caught, by a hang), NO-TESTS (the filter matched no test: fix it).
# Exit status: 0 when every selected mutation ran and was caught, 1 when one survived, 3 when none survived but some
# were STALE, BUILD-FAILED or NO-TESTS (the list needs fixing) or not run (--max-minutes), 2 on a usage or set-up error.
set -uo pipefail

die() { echo "mutate.sh: $*" >&2; exit 2; }

CALLER=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=/tmp/speechain-mutate
OUT=""
ONLY=""
AREAS=""
LIST=0
CHECK=0
WORKING_TREE=0
BASELINE=1
TEST_TIMEOUT=1200
BUILD_TIMEOUT=2400
MUTATIONS=""
MAX_MINUTES=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --list) LIST=1 ;;
        --check) CHECK=1 ;;
        --only) ONLY=${2:?--only needs ids}; shift ;;
        --area) AREAS=${2:?--area needs areas}; shift ;;
        --scratch) SCRATCH=${2:?--scratch needs a folder}; shift ;;
        --out) OUT=${2:?--out needs a folder}; shift ;;
        --working-tree) WORKING_TREE=1 ;;
        --no-baseline) BASELINE=0 ;;
        --timeout) TEST_TIMEOUT=${2:?}; shift ;;
        --build-timeout) BUILD_TIMEOUT=${2:?}; shift ;;
        --max-minutes) MAX_MINUTES=${2:?}; shift ;;
        --mutations) MUTATIONS=${2:?}; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done
MUTATIONS=${MUTATIONS:-$CALLER/scripts/mutations.txt}
[[ -f "$MUTATIONS" ]] || die "no mutation list at $MUTATIONS"
SCRATCH=${SCRATCH%/}
OUT=${OUT:-$SCRATCH-report}
case "$SCRATCH" in /|"$CALLER"|"$CALLER"/*) die "the scratch folder must lie outside the checkout ($CALLER)" ;; esac

# ---- the list ---------------------------------------------------------------------------------------------------
# Parsed into parallel arrays; the original and replacement texts are kept verbatim (after the one separator).
IDS=(); AREA=(); FILE=(); FILTER=(); SUITES=(); NOTICE=(); ORIG=(); REPL=()
parse_list() {
    local n=-1 line key value lineno=0
    local -A seen=()
    finish_block() {
        (( n < 0 )) && return
        [[ -n "${IDS[n]}" ]] || die "$MUTATIONS: a block without id before line $lineno"
        [[ -n "${FILE[n]}" && -n "${ORIG[n]+x}" && -n "${REPL[n]+x}" && -n "${FILTER[n]}" ]] \
            || die "$MUTATIONS: mutation ${IDS[n]} needs file, suites (or filter), a - line and a + line"
    }
    while IFS= read -r line || [[ -n "$line" ]]; do
        lineno=$((lineno + 1))
        [[ "$line" =~ ^[[:space:]]*# ]] && continue
        if [[ -z "${line//[[:space:]]/}" ]]; then continue; fi
        if [[ "$line" =~ ^id:[[:space:]]*(.*[^[:space:]])[[:space:]]*$ ]]; then
            finish_block
            n=$((n + 1))
            value=${BASH_REMATCH[1]}
            [[ -z "${seen[$value]+x}" ]] || die "$MUTATIONS:$lineno: id '$value' is used twice"
            seen[$value]=1
            IDS[n]=$value; AREA[n]=""; FILE[n]=""; FILTER[n]=""; SUITES[n]=""; NOTICE[n]=""
            unset 'ORIG[n]' 'REPL[n]'
            continue
        fi
        (( n >= 0 )) || die "$MUTATIONS:$lineno: text before the first id:"
        case "$line" in
            -|+) key=$line; value="" ;;
            -[[:space:]]*|+[[:space:]]*) key=${line:0:1}; value=${line:2} ;;
            *:*) key=${line%%:*}; value=${line#*:}; value=${value#"${value%%[![:space:]]*}"} ;;
            *) die "$MUTATIONS:$lineno: cannot read '$line'" ;;
        esac
        case "$key" in
            area) AREA[n]=$value ;;
            file) FILE[n]=$value ;;
            notice) NOTICE[n]=$value ;;
            suites)
                SUITES[n]=$value
                local alternatives
                alternatives=$(echo "$value" | tr -s ' ,' '\n\n' | grep -v '^$' | paste -sd '|')
                FILTER[n]="\\.(${alternatives})(/|\\.|\$)" ;;
            filter) FILTER[n]=$value; SUITES[n]=${SUITES[n]:-$value} ;;
            -) [[ -z "${ORIG[n]+x}" ]] || die "$MUTATIONS:$lineno: ${IDS[n]} has two - lines"
               [[ -n "$value" ]] || die "$MUTATIONS:$lineno: ${IDS[n]}: the original text is empty"
               ORIG[n]=$value ;;
            +) [[ -z "${REPL[n]+x}" ]] || die "$MUTATIONS:$lineno: ${IDS[n]} has two + lines"
               REPL[n]=$value ;;
            *) die "$MUTATIONS:$lineno: unknown key '$key'" ;;
        esac
    done < "$MUTATIONS"
    finish_block
}
parse_list
(( ${#IDS[@]} > 0 )) || die "$MUTATIONS holds no mutation"
command -v python3 > /dev/null || die "python3 is needed (exact text replacement)"

if (( LIST )); then
    for i in "${!IDS[@]}"; do
        printf '%-24s %-11s %s\n    suites: %s\n    %s\n' "${IDS[i]}" "${AREA[i]}" "${FILE[i]}" "${SUITES[i]}" "${NOTICE[i]}"
    done
    echo "${#IDS[@]} mutations"
    exit 0
fi

# the selection
SELECTED=()
if [[ -n "$ONLY" ]]; then
    IFS=', ' read -r -a wanted <<< "$ONLY"
    for w in "${wanted[@]}"; do
        [[ -z "$w" ]] && continue
        found=0
        for i in "${!IDS[@]}"; do [[ "${IDS[i]}" == "$w" ]] && { SELECTED+=("$i"); found=1; }; done
        (( found )) || die "no mutation '$w' (see --list)"
    done
else
    for i in "${!IDS[@]}"; do
        if [[ -n "$AREAS" ]]; then
            [[ ",${AREAS// /}," == *",${AREA[i]},"* ]] || continue
        fi
        SELECTED+=("$i")
    done
fi
(( ${#SELECTED[@]} > 0 )) || die "no mutation selected"

# Occurrences of the original text in the file (python: exact bytes, no regex, no line handling).
count_occurrences() {
    python3 - "$1" "$2" <<'EOF'
import sys
print(open(sys.argv[1], 'rb').read().count(sys.argv[2].encode()))
EOF
}
apply_mutation() {
    python3 - "$1" "$2" "$3" <<'EOF'
import sys
path, old, new = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
data = open(path, 'rb').read()
assert data.count(old) == 1
open(path, 'wb').write(data.replace(old, new, 1))
EOF
}

if (( CHECK )); then
    bad=0
    for i in "${SELECTED[@]}"; do
        n=0
        [[ -f "$CALLER/${FILE[i]}" ]] && n=$(count_occurrences "$CALLER/${FILE[i]}" "${ORIG[i]}")
        if [[ "$n" != 1 ]]; then echo "STALE ${IDS[i]}: the original text occurs $n times in ${FILE[i]}"; bad=1; fi
    done
    (( bad )) && exit 1
    echo "${#SELECTED[@]} mutations: every original text occurs exactly once"
    exit 0
fi

# ---- the scratch clone ------------------------------------------------------------------------------------------
mkdir -p "$(dirname "$SCRATCH")" "$OUT/logs" || die "cannot create $OUT"
exec 9> "$SCRATCH.lock"
flock -n 9 || die "another mutate.sh run holds $SCRATCH.lock"
rm -f "$SCRATCH.stop"

COMMIT=$(git -C "$CALLER" rev-parse HEAD) || die "$CALLER is not a git checkout"
if [[ ! -d "$SCRATCH/.git" ]]; then
    echo "== cloning $CALLER into $SCRATCH (the first build there takes 10-15 minutes)"
    git clone --quiet --no-checkout "$CALLER" "$SCRATCH" || die "cannot clone into $SCRATCH"
fi
git -C "$SCRATCH" fetch --quiet "$CALLER" HEAD || die "cannot fetch $CALLER's HEAD into $SCRATCH"
[[ "$(git -C "$SCRATCH" rev-parse FETCH_HEAD)" == "$COMMIT" ]] || die "fetched $(git -C "$SCRATCH" rev-parse FETCH_HEAD), expected $COMMIT"
# checkout -f rewrites only the files that differ (and undoes any mutation a killed run left); untracked files go,
# ignored ones (.build, Package.resolved) stay
git -C "$SCRATCH" checkout --quiet --force --detach "$COMMIT" || die "cannot check out $COMMIT in $SCRATCH"
git -C "$SCRATCH" clean --quiet -fd || die "cannot clean $SCRATCH"
copy_if_changed() {   # relative path: the caller's file into the scratch clone, only when the bytes differ
    local src="$CALLER/$1" dst="$SCRATCH/$1"
    if [[ -f "$src" ]] && ! cmp -s "$src" "$dst"; then mkdir -p "$(dirname "$dst")" && cp -p "$src" "$dst"; fi
}
copy_if_changed Package.resolved
SYNCED="HEAD $COMMIT"
if (( WORKING_TREE )); then
    while IFS= read -r -d '' f; do copy_if_changed "$f"; done < <(git -C "$CALLER" ls-files -z --modified --others --exclude-standard)
    while IFS= read -r -d '' f; do rm -f "$SCRATCH/$f"; done < <(git -C "$CALLER" ls-files -z --deleted)
    SYNCED="$SYNCED + the working tree"
fi
[[ -f "$SCRATCH/scripts/build-flags.sh" ]] || die "$SCRATCH has no scripts/build-flags.sh"
# shellcheck source=build-flags.sh
source "$SCRATCH/scripts/build-flags.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# ---- one mutation -----------------------------------------------------------------------------------------------
BACKUP="$SCRATCH.backup"
MUTATED=""
restore() {
    if [[ -n "$MUTATED" ]]; then
        cp -p "$BACKUP" "$SCRATCH/$MUTATED"   # the exact bytes and mtime of before
        rm -f "$BACKUP"
        MUTATED=""
    fi
}
trap 'restore' EXIT
trap 'restore; echo "mutate.sh: interrupted" >&2; exit 130' INT TERM

build() {   # log file
    ( cd "$SCRATCH" && timeout --kill-after=30 "$BUILD_TIMEOUT" nice -n 10 swift build "${SWIFT_RELEASE_FLAGS[@]}" --build-tests ) > "$1" 2>&1
}
run_tests() {   # filter regex, log file
    ( cd "$SCRATCH" && timeout --kill-after=30 "$TEST_TIMEOUT" nice -n 10 env MALLOC_PERTURB_="${MALLOC_PERTURB_:-165}" swift test "${SWIFT_RELEASE_FLAGS[@]}" --skip-build --filter "$1" ) > "$2" 2>&1
}
# the suites swift-testing reports failed ("✘ Suite GradScalerTests failed after …")
failed_suites() { grep -a -o '✘ Suite [A-Za-z0-9_]* failed' "$1" | awk '{print $3}' | sort -u | paste -sd ' ' || true; }
# swift-testing's last line: "✔ Test run with N tests passed after …" or "✘ Test run with N tests failed after …"
tests_run() { grep -a -o 'Test run with [0-9]* test' "$1" | tail -1 | grep -o '[0-9]*' || echo 0; }

elapsed() { echo $(( $(date +%s) - $1 )); }

# ---- the baseline -----------------------------------------------------------------------------------------------
START=$(date +%s)
echo "== scratch $SCRATCH at $SYNCED; ${#SELECTED[@]} mutation(s); logs in $OUT/logs"
BASELINE_NOTE="skipped (--no-baseline)"
if (( BASELINE )); then
    t0=$(date +%s)
    echo "== baseline: building the unmutated sources"
    build "$OUT/logs/baseline-build.log" || die "the unmutated build fails (see $OUT/logs/baseline-build.log)"
    b=$(elapsed "$t0")
    # every selected mutation's suites, in one run
    union=""
    for i in "${SELECTED[@]}"; do union+="${union:+|}(${FILTER[i]})"; done
    t1=$(date +%s)
    echo "== baseline: running the selected suites unmutated (build ${b}s)"
    if ! run_tests "$union" "$OUT/logs/baseline-test.log"; then
        grep -a '✘' "$OUT/logs/baseline-test.log" | head -20 >&2
        die "the unmutated sources fail the selected suites (see $OUT/logs/baseline-test.log): fix that first, or --no-baseline"
    fi
    BASELINE_NOTE="unmutated build ${b}s, $(tests_run "$OUT/logs/baseline-test.log") tests of the selected suites passed in $(elapsed "$t1")s"
    echo "== baseline: $BASELINE_NOTE"
fi

# ---- the report (rewritten after every mutation, so an interrupted run leaves what it found) ---------------------
summary_line() {
    local line="${#RESULTS[@]} mutations: $((caught + timedout)) caught, $survived survived, $buildfailed build failed, $stale stale"
    (( timedout )) && line+=" ($timedout of the caught by timeout)"
    (( notests )) && line+=", $notests matched no test"
    (( ${#RESULTS[@]} < ${#SELECTED[@]} )) && line+=" (of ${#SELECTED[@]} selected; not run: ${NOT_RUN:-the run is under way, or was interrupted})"
    echo "$line"
}
REPORT="$OUT/mutation-report.md"
write_report() {
    local r id area result s bs ts nt failing notice i
    {
        echo "# Mutation check"
        echo
        echo "Started $(date -u -d "@$START" '+%Y-%m-%d %H:%M UTC'), $SYNCED, $(nproc) cores, $(( $(date +%s) - START ))s so far."
        echo "Baseline: $BASELINE_NOTE."
        echo
        echo "| id | area | result | seconds | build s | test s | tests | failing suites | what a user would notice |"
        echo "|---|---|---|---:|---:|---:|---:|---|---|"
        for r in "${RESULTS[@]}"; do
            IFS='|' read -r id area result s bs ts nt failing <<< "$r"
            notice=""
            for i in "${!IDS[@]}"; do [[ "${IDS[i]}" == "$id" ]] && notice=${NOTICE[i]//|/\\|}; done
            echo "| $id | $area | $result | $s | $bs | $ts | $nt | $failing | $notice |"
        done
        echo
        summary_line
    } > "$REPORT"
}

# ---- the mutations ----------------------------------------------------------------------------------------------
RESULTS=()   # "id|area|result|seconds|build seconds|test seconds|tests|failing suites"
caught=0; survived=0; buildfailed=0; stale=0; timedout=0; notests=0
NOT_RUN=""
k=0
for i in "${SELECTED[@]}"; do
    if [[ -z "$NOT_RUN" ]] && { [[ -f "$SCRATCH.stop" ]] || (( MAX_MINUTES > 0 && $(date +%s) - START >= MAX_MINUTES * 60 )); }; then
        echo "== stopping: $( [[ -f "$SCRATCH.stop" ]] && echo "$SCRATCH.stop exists" || echo "past --max-minutes $MAX_MINUTES")"
        NOT_RUN=" "
    fi
    if [[ -n "$NOT_RUN" ]]; then NOT_RUN+="${IDS[i]} "; continue; fi
    k=$((k + 1))
    id=${IDS[i]}; file=${FILE[i]}; path="$SCRATCH/$file"
    t0=$(date +%s)
    bs=""; ts=""; ntests=""; failing=""
    printf '== [%d/%d] %s (%s) %s ... ' "$k" "${#SELECTED[@]}" "$id" "${AREA[i]}" "$file"
    occurrences=0
    [[ -f "$path" ]] && occurrences=$(count_occurrences "$path" "${ORIG[i]}")
    if [[ "$occurrences" != 1 ]]; then
        result=STALE; stale=$((stale + 1))
        echo "STALE (the original text occurs $occurrences times in $file)"
        RESULTS+=("$id|${AREA[i]}|$result|0||||")
        write_report
        continue
    fi
    cp -p "$path" "$BACKUP"
    MUTATED=$file
    apply_mutation "$path" "${ORIG[i]}" "${REPL[i]}"
    tb=$(date +%s)
    if ! build "$OUT/logs/$id-build.log"; then
        bs=$(elapsed "$tb")
        result=BUILD-FAILED; buildfailed=$((buildfailed + 1))
    else
        bs=$(elapsed "$tb")
        tt=$(date +%s)
        run_tests "${FILTER[i]}" "$OUT/logs/$id-test.log"
        status=$?
        ts=$(elapsed "$tt")
        ntests=$(tests_run "$OUT/logs/$id-test.log")
        if (( status == 124 || status == 137 )); then
            result=TIMEOUT; timedout=$((timedout + 1))
        elif (( status != 0 )); then
            result=CAUGHT; caught=$((caught + 1))
            failing=$(failed_suites "$OUT/logs/$id-test.log")
        elif [[ "$ntests" == 0 ]]; then
            result=NO-TESTS; notests=$((notests + 1))
        else
            result=SURVIVED; survived=$((survived + 1))
        fi
    fi
    restore
    s=$(elapsed "$t0")
    echo "$result (${s}s: build ${bs}s${ts:+, tests ${ts}s})"
    RESULTS+=("$id|${AREA[i]}|$result|$s|$bs|$ts|$ntests|$failing")
    write_report
done
NOT_RUN=${NOT_RUN# }; NOT_RUN=${NOT_RUN% }
write_report
summary=$(summary_line)

echo
printf '%-24s %-11s %-12s %7s\n' id area result seconds
for r in "${RESULTS[@]}"; do
    IFS='|' read -r id area result s _ <<< "$r"
    printf '%-24s %-11s %-12s %7s\n' "$id" "$area" "$result" "$s"
done
echo
echo "$summary"
echo "(report: $REPORT)"
(( survived == 0 )) || exit 1
(( stale + buildfailed + notests == 0 )) && [[ -z "$NOT_RUN" ]] || exit 3
exit 0
