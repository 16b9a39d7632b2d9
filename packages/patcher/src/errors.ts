import { ValueError } from "@blocksparse/core";

/**
 * A patch was refused: bad options, a pattern that matches a module that is not a Linear,
 * a layer the block shape does not divide, or no layer matched. `problems` lists every
 * reason found (all are checked before anything changes).
 */
export class PatchError extends ValueError {
  override name = "PatchError";
  readonly problems: readonly string[];

  constructor(where: string, problems: readonly string[]) {
    super(problems.length === 1 ? `${where}: ${problems[0]}` : `${where}: ${problems.length} problems:\n  - ${problems.join("\n  - ")}`);
    this.problems = problems;
  }
}
