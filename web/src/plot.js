// uPlot (https://github.com/leeoniya/uPlot) as one ES module, bundled by build.mjs into
// flowray/web/static/vendor/plot.js; its stylesheet is copied next to it as uplot.css.
//
//   import uPlot from "/static/vendor/plot.js";   // or: import { uPlot } from ...
import uPlot from "uplot";

export default uPlot;
export { uPlot };
