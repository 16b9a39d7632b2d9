/** The parts of the `mnist` package (plain CommonJS, no types) that this example reads. */
declare module "mnist" {
  interface MnistDigit {
    /** The digit's label, 0-9. */
    id: number;
    /** How many samples of this digit the package ships. */
    length: number;
    /** Every sample's 784 pixels (28 x 28, row-major, scaled to [0, 1]) back to back. */
    raw: number[];
  }
  const digits: MnistDigit[];
  export default digits;
}
