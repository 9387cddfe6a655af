/* A line plot as a standalone SVG (e.g. Kendall's tau against epoch for
 * `mdenas_mpi rankcheck`). Plain SVG 1.1, like the heatmap in runlog.h. */
#ifndef MDENAS_PLOT_H
#define MDENAS_PLOT_H

#include <stdio.h>

#include "mdenas/error.h"

/* Text into an SVG/XML document: & < > " ' escaped, control characters dropped. */
void md_svg_text(FILE *f, const char *s);

/* The points (x[i], y[i]), i in [0, n), n >= 1, joined in order by a line with
 * a marker on each (<polyline class="line">, <circle class="point">), on axes
 * with ticks and labels, under the title. A point whose x or y is NaN or
 * infinite is left out and breaks the line there (a gap: each run of plotted
 * points is one polyline). The x axis spans the plotted x values (ticks at
 * whole numbers only, when they all are whole). The y axis spans [ymin, ymax];
 * either given as NAN is taken from the data (rounded out to a tick); points
 * beyond an explicit range are drawn on its edge. title, xlabel and ylabel may
 * be NULL (not drawn); XML's special characters in them are escaped. Written
 * atomically (path.tmp, fsync, rename), like md_json_write_file; errors name
 * the path. */
md_status md_svg_line_plot(const char *path, const char *title, const char *xlabel,
                           const char *ylabel, const double *x, const double *y, int n, double ymin,
                           double ymax);

#endif
