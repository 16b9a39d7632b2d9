/**
 * Block-sparse kernels receive @blocksparse/format's BsrPattern object itself as an
 * attribute. It is immutable, so backends may cache per-pattern device data in a
 * WeakMap keyed by it.
 */
export { BsrPattern } from "@blocksparse/format";
