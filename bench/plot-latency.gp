# bench/plot-latency.gp - latency over time from `tollbench load --csv`.
#
#   gnuplot -e "in='x.csv'; out='x.png'" bench/plot-latency.gp
#
# The CSV has one row a second: second,requests,p50,p90,p99,p999,max, the
# latencies in microseconds.  The PNG shows the five latencies on a log
# scale (left axis) and the requests answered each second (right axis), so a
# stall shows as a dip in throughput under a spike in the tail.  Optional:
# title='...' sets the title (default: the CSV's name).  gnuplot is only
# needed to draw the figure; nothing builds or tests with it.

if (!exists("in")) { print "usage: gnuplot -e \"in='x.csv'; out='x.png'\" bench/plot-latency.gp"; exit }
if (!exists("out")) { out = in . ".png" }
if (!exists("title")) { title = "tollbench load: " . in }

if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
	set terminal pngcairo size 1200,700 enhanced font "sans,10"
} else {
	set terminal png size 1200,700
}
set output out

set datafile separator ","
set key top left autotitle columnhead
set title title noenhanced
set grid xtics ytics mytics
set xlabel "second"
set ylabel "latency (us)"
set logscale y
set format y "%.0f"
set boxwidth 0.8 relative
set style fill solid 0.4 noborder
set y2label "requests answered per second"
set y2tics
set ytics nomirror
set y2range [0:*]

plot in using 1:2 axes x1y2 with boxes lc rgb "#cccccc" title "requests/s", \
     ""  using 1:7 with lines lw 1 lc rgb "#999999" title "max", \
     ""  using 1:6 with lines lw 2 lc rgb "#d62728" title "p99.9", \
     ""  using 1:5 with lines lw 2 lc rgb "#ff7f0e" title "p99", \
     ""  using 1:4 with lines lw 2 lc rgb "#2ca02c" title "p90", \
     ""  using 1:3 with lines lw 2 lc rgb "#1f77b4" title "p50"
