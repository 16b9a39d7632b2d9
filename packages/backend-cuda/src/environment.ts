/**
 * The switches the backend reads from the environment (BLOCKSPARSE_ALLOW_TF32, BLOCKSPARSE_CUDA_AUTOTUNE,
 * BLOCKSPARSE_CUDA_WARMUP): "1" on, "0" off, unset or empty the default. Anything else ("true", "off", "yes") is
 * reported as a warning naming the variable, and the default holds: it was taken as the default in silence, so that
 * BLOCKSPARSE_CUDA_AUTOTUNE=true left autotuning off and BLOCKSPARSE_CUDA_WARMUP=false still warmed up.
 */
export function environmentSwitch(name: string, fallback: boolean, text: string | undefined = process.env[name]): boolean {
  if (text === undefined) return fallback;
  const value = text.trim();
  if (value === "") return fallback;
  if (value === "1") return true;
  if (value === "0") return false;
  process.emitWarning(`${name} must be 1 or 0, got '${text}'; using the default (${fallback ? "1" : "0"})`, { code: "BLOCKSPARSE_CUDA_ENVIRONMENT" });
  return fallback;
}
