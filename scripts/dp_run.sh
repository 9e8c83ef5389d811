# Shared by scripts/dp_tune_*.sh (sourced, not run): `run NAME OPTIONS...` trains one
# `bioplausible train $B OPTIONS --out $OUT/NAME` run unless it already completed, and prints its
# validation and test error, epsilon and sigma. The caller sets OUT (a directory) and B (common options).
run() {
  name=$1; shift
  if [ -f "$OUT/$name/summary.json" ] && grep -q '"completed"' "$OUT/$name/summary.json"; then return; fi
  echo "== $name $(date -u +%T)"
  if ! bioplausible train $B "$@" --out "$OUT/$name" > "$OUT/$name.json" 2> "$OUT/$name.err"; then
    echo "$name failed: $(tail -c 300 "$OUT/$name.err")"; return
  fi
  python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(sys.argv[2], 'val', s.get('val_error'), 'test', s.get('test_error'), 'eps', s.get('epsilon'), 'sigma', s.get('noise_multiplier'))" "$OUT/$name.json" "$name"
}
