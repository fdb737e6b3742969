# usage: docs/scripts/speed_race.sh OUTDIR CHECKPOINT INT8_GRAPH [ROUNDS]: the README's speed race (docs/speed.md),
# a checkpoint and its int8 export interleaved, ROUNDS rounds; each run races yolo11n-pose itself
O=$1; BF=$2; I8=$3; R=${4:-1}; mkdir -p $O
B=".venv/bin/python main.py bench --compare-yolo --pipeline"
S=../shared/videos/sports2d_demo.mp4; T=../shared/videos/openpose_examples_media_video.avi
for r in $(seq 1 $R); do
for W in $BF $I8; do
  n=$(basename $W | tr . _)_r$r
  $B $T --width 1280 --budget-ms 20 --weights $W > $O/street_$n.txt 2>&1
  $B $S --width 1280 --weights $W > $O/sports1280_$n.txt 2>&1
  $B $S --width 0 --weights $W > $O/sportsfull_$n.txt 2>&1
done
done
echo SPEED DONE > $O/done
