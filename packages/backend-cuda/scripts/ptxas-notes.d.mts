/** One of ptxas's notes on a kernel that loses its wgmma overlap (ptxas-notes.mjs). */
export interface PtxasNote {
  /** C7500-C7599. */
  code: string;
  /** The note after its code. */
  text: string;
  /** The mangled name of the kernel it names, or null. */
  kernel: string | null;
}

/** The distinct notes in a compiler log, in the order they first appear. */
export function ptxasNotes(log: string): PtxasNote[];
