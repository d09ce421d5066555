"""BEVFormer for CPUs with temporal fusion: the static CPU config
(``bevformer_r18_fpn_1xb2-cpu_synth-400x224.py``, with its denoising) plus the history BEV, the
3-frame queue drawn from consecutive frames and the ego-motion embedding of the BEV queries (all
three on since 4 Dec 2026, session 9; the first rows below are without them), and since 5 Dec
2026 (session 17) BEVDet4D's history fusion, DINO's look forward twice and the dense BEV head
(``bev_aux``) in training, since session 18 the history at test rebuilt from the 2 frames
before (``history_depth=2``), and since session 19 (5 Dec 2026) the history frames every second
frame (``queue_stride=2``, ``history_stride=2``: 1 s apart), since session 21 (5 Dec 2026) the
decoder's read of the history frame's cameras (``decoder.history_attn``), and since session 22
(5 Dec 2026) the last decoder layer's search of the history frame's cameras for where each
query's object was (``decoder.history_match``), and since session 25 (6 Dec 2026) the history
frames every fourth frame (``queue_stride=4``, ``history_stride=4``: 2 s apart) with the search
spanning +-3 m: NDS 0.4099 / 0.4378, mAP 0.2887 / 0.3056, mAVE 0.3414 / 0.3228 (seeds 0 / 1).
The same config trained and tested without history, on the same threads (one each, session
29): NDS 0.3821 / 0.3962, mAP 0.2494 / 0.2738, mAVE 0.4081 / 0.4253 (16.3 % / 24.1 % lower
with history; issue 14 asks for 30 %: not reached; against session 18's rows on 2 threads, NDS
0.4129 / 0.4069, mAVE 0.4253 / 0.4592, the tables below say 19.7 % / 29.7 %: runs on different
threads differ as much as two seeds; tables near the end). Since session 33 (7 Dec 2026) video
testing also votes the velocities of the cars, buses, motorcycles and pedestrians from their
detections of the 8 frames before (``velocity_refine``, test time only), and the decoder's history
reads are motion-compensated (``decoder.motion_compensation``, session 30's run, trained from
scratch side by side with the same budget): NDS 0.4247 / 0.4265, mAP 0.2929 / 0.2992, mAVE 0.3264
/ 0.3111 (20.0 % / 26.9 % lower than without history, mean 23.5 %: issue 14's 30 % still not
reached; session 33's section below). Both trained twice as long (3600 iterations, sessions 35-36;
this config's schedule since session 36): NDS 0.4772 / 0.4740, mAP 0.3367 / 0.3510, mAVE 0.3025 /
0.2770 with history against NDS 0.4744 / 0.4651, mAP 0.3800 / 0.3546, mAVE 0.4163 / 0.4265
without: 27.3 % / 35.1 % lower, mean 31.2 % (the two seeds' mean mAVE, 0.2898 against 0.4214, also
31.2 % lower): issue 14's 30 % reached on the mean of the two seeds, not on seed 0 alone; without
the test-time votes 0.3206 / 0.3189, 24.1 % lower (the section before the earliest rows).

- Training: 3-frame queues (BEVFormer's ``queue_length=3``): each sample comes with the frames
  4 and 8 before it in its scene (``queue_range=2``, ``queue_stride=4``: 2 s and 4 s earlier;
  BEVFormer draws 2 of the 3 frames just before); they run
  in eval mode without gradients, each with the BEV of the one before aligned by the ego motion
  from the info files' poses (``lidar2global``; no CAN bus), and the sample trains on the
  aligned BEV of the last; the ego-motion embedding adds that motion and the time gap to the BEV
  queries.
- Decoder: every layer also reads the history frame's cameras around its query's point
  (``history_attn``), the last one searches them (+-3 m, ``history_match``), from the second layer
  on where the previous layer's velocity puts the object then (``motion_compensation``).
- Testing: video testing (``video_test=True``) carries the history from frame to frame of a
  scene, rebuilt for each frame from the frames 4 and 8 before it as the queue trains it
  (``history_depth=2``, ``history_stride=4``: 3 encoder runs and 1 backbone run per frame, the
  neck levels of the last 8 frames kept), and resets it at a scene
  start or a gap of more than 1 s; ``SceneSequentialSampler``
  keeps every scene whole and in time order on one process, so ``tools/dist_test.sh`` with N
  processes gives the 1-process result. The velocities of the moving classes are then voted from
  the detections of the 8 frames before (``velocity_refine``, :class:`VelocityRefiner`; off with
  ``--cfg-options model.velocity_refine=None``).
- Schedule: 3600 iterations of batch 2 (22 epochs of the 320 training samples), twice the static
  config's, the warm-up (180) and the cosine stretched with it, validated at 1800 and 3600 (since
  session 36; the rows before the 2x section were trained 1800 iterations); about 2 h alone on
  the 2-core AMD EPYC (1.99 s per iteration).

    python tools/train.py configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224-temporal.py
    python tools/test.py configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224-temporal.py \
        work_dirs/bevformer_r18_fpn_1xb2-cpu_synth-400x224-temporal/iter_3600.pth

Measured on the synthetic val (80 samples), seed 0, this config as committed then (4 Dec 2026,
session 9, the 2-core AMD EPYC machine, one thread beside another training, median 3.11 s per
iteration, 1800 iterations in 95 min), against the static config with denoising (session 7's
run, 2 threads on the slower AVX2 machine; same data, model, denoising, budget and seed):

    python tools/train.py configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224-temporal.py \
        --work-dir work_dirs/bev_temporal_dn_consec_ego

    config                          it    NDS     mAP     mATE  mASE  mAOE  mAVE  mAAE  s/it
    static, denoising               900   0.277   0.117
    with history (session 9)        900   0.2742  0.1302                          0.36
    static, denoising               1800  0.3298  0.1886  0.85  0.30  1.01  0.35  0.14  2.79
    with history (session 9)        1800  0.3435  0.2316  0.85  0.26  0.97  0.49  0.15  3.11
    same weights, history off       1800  0.3043  0.1592  0.92  0.28  0.94  0.49  0.13

The last row tests the final checkpoint with ``--cfg-options model.video_test=False`` (plus the
run's options): the history is worth +0.039 NDS and +0.072 mAP on the same weights (mATE 0.92 ->
0.85), so the model uses it, for detection. Velocity is **not** better: mAVE 0.49 against the
static config's 0.35 (the issue's target is 30 % lower, 0.245: **not reached**), and the
same weights give 0.49 with and without history. Per class, with history / without (same weights):
car 0.45 / 0.71, truck 0.36 / 0.40, bus 0.72 / 0.69, motorcycle 0.83 / 0.76, pedestrian 1.21 /
1.17, bicycle 0.27 / 0.14: the history does lower the car's velocity error by 36 %, while
pedestrians (1347 of the 4375 val boxes; median speed 1.05 m/s, 0.5 m between frames, a quarter
of a 2.05 m cell) get nothing from it. NDS 0.3435 is below the target of 0.35 (**not reached**).

BEVDet4D's fusion on top (``history_fusion='conv'``, :class:`HistoryConvFusion`: the BEV plus
two 3x3 convolutions over [BEV, aligned history, validity] after the encoder layers; session 11,
4 Dec 2026, seed 0, one thread beside another training), the same command with
``--cfg-options model.bbox_head.encoder.history_fusion=conv``:

    config                          it    NDS     mAP     mATE  mASE  mAOE  mAVE  mAAE  s/it
    + history fusion                900   0.2607  0.1064  1.08  0.39  1.18  0.38  0.16
    + history fusion                1800  0.3346  0.1866  0.83  0.31  0.95  0.35  0.15  3.72
    same weights, history off       1800  0.2912  0.1369  0.93  0.33  0.97  0.41  0.13

The fusion makes the velocity read the history: mAVE 0.49 -> 0.35 against this config, and on
its own weights 0.41 without history against 0.35 with it (this config: 0.49 either way). Per
class (velocity error, fusion / this config): car 0.34 / 0.45, truck 0.26 / 0.36, bus 0.51 /
0.72, bicycle 0.12 / 0.27, motorcycle 0.64 / 0.83, pedestrian 0.92 / 1.21; the pedestrians'
gain is not from the history (0.92 without it too). It costs detection: NDS 0.3346 against
0.3435, mAP 0.187 against 0.232 (car AP 0.28 against 0.38), one seed each. mAVE equals the static
config's 0.35 instead of the 30 % below it the issue asks for (0.245), and NDS is below 0.35:
**not reached**; the fusion stayed off then (NDS lower; on since session 17, below).

Look forward twice with the fusion, and the dense BEV head (session 17, 5 Dec 2026, seed 0, each
run alone on 2 threads of the 2-core AMD EPYC, a few one-thread evaluations beside the second):

    python tools/train.py configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224-temporal.py \
        --work-dir work_dirs/bev_tmp_lft_fuse_s0 --cfg-options \
        model.bbox_head.decoder.look_forward_twice=True model.bbox_head.encoder.history_fusion=conv
    # with the dense BEV head: + model.bbox_head.bev_aux.min_radius=1 (work_dirs/bev_tmp_lft_fuse_aux_s0;
    #   the config as committed now)

    config                          it    NDS     mAP     mATE  mASE  mAOE  mAVE  mAAE  s/it
    + fusion + look fwd twice       900   0.2883  0.1407  0.97  0.37  0.93  0.40  0.16
    + fusion + look fwd twice       1800  0.3304  0.1882  0.90  0.31  0.87  0.43  0.12  1.75
    same weights, history off       1800  0.2980  0.1465  0.94  0.32  0.86  0.49  0.13
    + dense BEV head (bev_aux)      900   0.2897  0.1521  0.99  0.36  0.94  0.41  0.17
    + dense BEV head, this config   1800  0.3722  0.2357  0.83  0.23  0.88  0.43  0.10  1.77
    same weights, history off       1800  0.3504  0.1895  0.86  0.23  0.82  0.42  0.11

The dense BEV head (:class:`BEVCentreAuxHead`, training only: centre heatmaps and, at each
centre cell, its offset and velocity) lifts NDS from 0.3304 to **0.3722** and mAP from 0.188 to
0.236 against the same setting without it (mATE 0.83, mASE 0.23); the small classes gain most
(AP bicycle 0.009 -> 0.137, motorcycle 0.024 -> 0.113, traffic cone 0.029 -> 0.126, barrier 0.048
-> 0.180). Since 5 Dec 2026 (session 17) this config has look forward twice, the fusion and the
dense BEV head on: **NDS 0.3722 >= 0.35, issue 14's NDS target reached** (one seed). Velocity is
not better: mAVE 0.43 (0.42 on the same weights without history), per class car 0.41, truck 0.28,
bus 0.56, motorcycle 0.81, pedestrian 1.08, bicycle 0.23; the dense velocity target lowers the
moving cars' error (0.61 m/s against 0.88) and makes the model commit on the walking pedestrians
(58 % predicted standing against 88 %), but 26 % of them are then predicted walking the wrong way.
mAVE against the static config's 0.35: **not reached** (the target is 0.245), and the static
config has not been re-run with these three settings.
Look forward twice, which gave the DETR3D-style CPU config +0.03 NDS on two seeds, did not lift
this one: NDS 0.3304 against the fusion's 0.3346 and this config's 0.3435 (one seed each; those
two ran on one thread beside another training, so their float reductions differ too, and two
runs of one setting differ by 0.01-0.02). The history is worth +0.032 NDS and +0.042 mAP on the
same weights; velocity error per class with / without it: car 0.59 / 0.74, truck 0.27 / 0.44,
bus 0.68 / 0.82, motorcycle 0.70 / 0.73, pedestrian 1.03 / 0.99, bicycle 0.18 / 0.15.
``tools/analysis/compare_matched.py`` on the two dumps says why the mean stays high: of the 204
walking pedestrians it matches, 88 % are predicted standing (slower than 0.5 m/s) with the history
and 89 % without, so the history does not tell the model which way they walk (0.45-0.8 m in a
frame, a quarter to a third of a 2.05 m cell), and it hedges at zero; moving cars are never
predicted standing or reversed, their error is the speed's size (0.88 m/s with the history, 1.10
without).

History depth at test, and the ablation against the same config without history (session 18,
5 Dec 2026, each training alone on 2 threads of the 2-core AMD EPYC; the ``history_depth`` rows
test the checkpoints of the recurrent rows with ``--cfg-options model.history_depth=2``):

    CONFIG=configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224-temporal.py
    # the config as committed in session 17 (recurrent history), seeds 0 and 1
    python tools/train.py $CONFIG --work-dir work_dirs/bev_tmp_s1 --cfg-options \
        model.history_depth=None randomness.seed=1
    # the same config without history: single frames in training, no video testing
    python tools/train.py $CONFIG --work-dir work_dirs/bev_tmp_nohist_s0 --cfg-options \
        train_dataloader.dataset.queue_length=1 train_dataloader.dataset.queue_range=0 \
        model.video_test=False

    config                           seed  NDS     mAP     mATE  mASE  mAOE  mAVE  mAAE  s/it
    with history, recurrent test     0     0.3722  0.2357  0.83  0.23  0.88  0.43  0.10  1.77
    with history, history_depth=2    0     0.3947  0.2664  0.79  0.23  0.84  0.44  0.09
    without history                  0     0.4129  0.2861  0.77  0.23  0.77  0.43  0.10  1.13
    with history, recurrent test     1     0.3762  0.2643  0.77  0.22  0.99  0.47  0.11  1.77
    with history, history_depth=2    1     0.4027  0.2915  0.73  0.22  0.95  0.44  0.09
    without history                  1     0.4069  0.2855  0.72  0.25  0.80  0.46  0.13  1.17

Training builds each history on a chain of the 2 frames before; the recurrent test (BEVFormer's)
on a chain over the whole scene so far. Testing as the model was trained is worth +0.023 and
+0.027 NDS, +0.031 and +0.027 mAP on the two seeds, for 1.75x the test time (0.71 against 0.41 s
per frame on one thread): ``history_depth=2`` is on since. Without history the same config
trains to NDS 0.4129 / 0.4069 (seeds 0 / 1), above or level with the history model tested
either way (0.3947 / 0.4027; mAP 0.2861 / 0.2855 against 0.2664 / 0.2915), at 1.13 s per
iteration against 1.77: at this budget the history does not pay for detection. The history model's
training loss is the lower (seed 0: 6.06 against 6.59 over the last 300 iterations) and its val NDS
the lower: it leans on the history (whose frames run without GridMask in training, while the
sample's own images have it; a possible cause, not measured). Velocity: mAVE 0.44 / 0.44 with
the history against 0.43 / 0.46 without (3 % higher on seed 0, 4 % lower on seed 1), **issue
14's velocity target (30 % lower) not reached**; per class (``compare_matched.py``, seed 0,
moving objects each model matches) the history nearly halves the moving cars' error (0.59
against 0.87 m/s; seed 1: 0.53 against 0.87) and does not help the others (trucks 0.77 / 0.68,
buses 0.87 / 0.77, motorcycles 1.51 / 0.94, walking pedestrians 1.34 / 1.32, 58 % / 79 % of them
predicted standing). The dense BEV head's own velocity read at the true centre cell is no better
(moving pedestrians 1.30 m/s, cars 0.65): the 2.05 m cells do not carry the pedestrians' 0.5 m
per frame. NDS >= 0.35 with history: reached (0.3947 / 0.4027).

History 1 s back (session 19, 5 Dec 2026, each training on 2 threads of the 2-core AMD EPYC, the
seed-0 one alone but for a few unit tests, the seed-1 one beside light one-thread analyses; its
s/it is not comparable): the queue and the test chain take every second frame, the history BEV
is 1 s old (built on the frame 2 s back), a walking pedestrian moves 1.2 m in it instead of 0.6:

    python tools/train.py $CONFIG --work-dir work_dirs/bev_tmp_stride2_s1 --cfg-options \
        randomness.seed=1   # the config as committed now (seed 0: without the seed option)

    config                                  seed  NDS     mAP     mATE  mASE  mAOE  mAVE  mAAE  s/it
    history 0.5 s back (session 18)         0     0.3947  0.2664  0.79  0.23  0.84  0.44  0.09
    history 1 s back (this config)          0     0.3998  0.2848  0.82  0.23  0.88  0.40  0.10  1.76
    without history (session 18)            0     0.4129  0.2861  0.77  0.23  0.77  0.43  0.10  1.13
    history 0.5 s back (session 18)         1     0.4027  0.2915  0.73  0.22  0.95  0.44  0.09
    history 1 s back (this config)          1     0.3932  0.2764  0.74  0.24  1.01  0.32  0.15  1.97
    without history (session 18)            1     0.4069  0.2855  0.72  0.25  0.80  0.46  0.13  1.17

mAVE against the same config without history: 6 % lower on seed 0 (0.3979 against 0.4253), 31 %
lower on seed 1 (0.3158 against 0.4592): **issue 14's velocity target (30 % lower) reached on one
seed of two, not reached** (the mean is 19 % lower); NDS 0.3998 / 0.3932 (>= 0.35), equal to the
0.5 s history on average (0.3965 against 0.3987) with lower mAVE on both seeds, so it is on since.
Per class (``compare_matched.py``, moving objects each model matches, 1 s history against none,
seed 0 / seed 1): cars 0.55 / 0.59 against 0.87 / 0.87 m/s, trucks 0.62 / 0.54 against 0.68 /
0.81, buses 0.82 / 0.73 against 0.77 / 0.88; walking pedestrians 1.30 / 1.24 against 1.32 / 1.27:
nothing. On seed 0 the model predicts 45 % of the walkers moving, all of them along -y whichever
way they walk (the training set's walkers go -y 3 times in 5); on seed 1 it predicts all of them
standing. Yet the models' own detections move the way the walkers do
(``tools/analysis/track_direction.py``, walking pedestrians matched in two frames: the
displacement points the true way 72-76 % of the time 0.5 s apart, 83-85 % 1 s and 97-99 % 2 s
apart, with and without history alike): the motion is in the detections, the BEV history does not
bring it to the velocity head. An online tracker on the no-history model's detections (each
detection moved back by its predicted velocity and associated with the previous frame's nearest
of its class, the velocity the least-squares slope of its track's positions over 2 s, used above
0.8 m/s) lowers the cars' velocity error from 0.83 to 0.39 but not the pedestrians' (1.04 either
way; their tracks break at a missed detection) and mAVE from 0.43 to 0.37; an offline sketch on one
dump (four settings tried on the val set), not in the toolbox.

History 1.5 s back (session 20, 5 Dec 2026, each training on 2 threads of the 2-core AMD EPYC, the
seed-0 one alone, the seed-1 one beside one-thread analyses; its s/it is not comparable): the
queue and the test chain take every third frame (``queue_stride=3``, ``history_stride=3``), a
walking pedestrian moves 1.4-2.4 m (0.7-1.2 cells) in the history:

    python tools/train.py $CONFIG --work-dir work_dirs/bev_tmp_stride3_s0 --cfg-options \
        train_dataloader.dataset.queue_stride=3 model.history_stride=3   # seed 1: randomness.seed=1

    config                                  seed  NDS     mAP     mATE  mASE  mAOE  mAVE  mAAE  s/it
    history 1 s back (this config)          0     0.3998  0.2848  0.82  0.23  0.88  0.40  0.10  1.76
    history 1.5 s back                      0     0.3960  0.2611  0.78  0.24  0.85  0.36  0.12  1.72
    without history (session 18)            0     0.4129  0.2861  0.77  0.23  0.77  0.43  0.10  1.13
    history 1 s back (this config)          1     0.3932  0.2764  0.74  0.24  1.01  0.32  0.15  1.97
    history 1.5 s back                      1     0.4023  0.2874  0.77  0.26  0.91  0.37  0.12  1.93
    without history (session 18)            1     0.4069  0.2855  0.72  0.25  0.80  0.46  0.13  1.17

mAVE against the same config without history: 16 % lower on seed 0 (0.3565 against 0.4253), 20 %
lower on seed 1 (0.3686 against 0.4592), **not reached** on either seed (mean 18 %, the 1 s history's
19 %); the mean mAVE of the two seeds is 0.3626 against 0.3569 for 1 s and the mean NDS 0.3992
against 0.3965: no better, so the config keeps the 1 s history. Per class on seed 0
(``compare_matched.py``, moving objects both models match, against none): cars 0.57 against 0.87,
trucks 0.61 / 0.68, buses 0.75 / 0.77, walking pedestrians 1.41 / 1.32 (27 % reversed, 63 %
predicted standing): the longer gap does not bring the walkers' direction either. A linear probe
(``tools/analysis/bev_probe.py``: logistic regression on the BEV the encoder returns, sampled
bilinearly on the 3x3 cells around each pedestrian's true centre, fit on the 8 train scenes,
scored on the 2 val scenes' 1347 pedestrians; the README has the commands) reads walking against
standing from either model's BEV (standing recall 1.00) but the walkers' direction barely: right
60 % and reversed 39 % from the 1 s history model's BEV (seed 0; 60 / 40 from the 1.5 s one),
right 52 % and reversed 48 % (chance) from the model without history; on seed 1 57 / 42 with the
1 s history and 57 / 43 without. The detections 1 s apart point the right way 83-85 % of the time
(``track_direction.py`` above): at 2.05 m cells the BEV hardly carries the walkers' direction
(a linear read-out finds 60/40; the heads' own velocities, 1.30 / 1.41 m/s at 1 / 1.5 s, no
better), so a change of the
velocity head or its loss is unlikely to find it there; it needs the instances' own history
(queries carried from frame to frame with their positions, as StreamPETR and Sparse4D do, or
sampling the previous frames' image features at each query's earlier position).

The decoder reads the history frame's cameras (session 21, 5 Dec 2026, each training alone on 2
threads of the 2-core AMD EPYC, one-thread analyses beside it for a few minutes): every decoder
layer, after its BEV cross-attention, also samples the neck levels of the frame the history BEV
comes from (1 s before) around each query's 3D reference point projected into that frame's images
through the ego motion from the poses (``history_attn``, :class:`HistoryCameraAttention`: 4 heads,
4 points, 4 levels, a zero-initialised residual; ``geometry.earlier_lidar2img``). Where a walker
was a second ago is about 1.2 m, 2 cells of the stride-8 level at 20 m: what the 2.05 m BEV cells
do not hold. A model without an earlier frame never runs the module, whose parameters are drawn
from forked generators, so the no-history rows stand for this config too (the first 20 iterations
of the no-history run repeat session 18's losses and gradient norms exactly):

    python tools/train.py $CONFIG --work-dir work_dirs/bev_tmp_hattn_s0
    # seed 1: --work-dir work_dirs/bev_tmp_hattn_s1 --cfg-options randomness.seed=1

    config                                  seed  NDS     mAP     mATE  mASE  mAOE  mAVE    mAAE  s/it
    + history cameras (this config)         0     0.3894  0.2602  0.78  0.23  0.92  0.3499  0.13  1.79
    history 1 s back (session 19)           0     0.3998  0.2848  0.82  0.23  0.88  0.3979  0.10  1.76
    without history (session 18)            0     0.4129  0.2861  0.77  0.23  0.77  0.4253  0.10  1.13
    + history cameras (this config)         1     0.4356  0.2935  0.69  0.22  0.74  0.3530  0.11  1.77
    history 1 s back (session 19)           1     0.3932  0.2764  0.74  0.24  1.01  0.3158  0.15  (1.97)
    without history (session 18)            1     0.4069  0.2855  0.72  0.25  0.80  0.4592  0.13  1.17

(900 iterations: NDS 0.3115 / 0.3361, mAVE 0.3636 / 0.3437.) mAVE against the same config
without history: 18 % lower on seed 0, 23 % on seed 1 (mean 21 %; the 1 s history without the
camera read: 6 % / 31 %, mean 19 %): **issue 14's velocity target (30 % lower) not reached**.
Against the 1 s history alone the mean mAVE is 0.3515 against 0.3569 and the mean NDS 0.4125
against 0.3965 (seed 1: 0.4356, the best of any row, seed 0: 0.3894, the lowest of its three),
so it is on (the rule set before seed 1 finished: lower mean mAVE, mean NDS not 0.01 lower). On
the seed-0 weights without the camera read at test (``--cfg-options
model.bbox_head.decoder.history_attn=None``): NDS 0.3653, mAP 0.2371, mAVE 0.3885: the model uses
it. Per class (``compare_matched.py``, moving objects both models match, against no history, seed
0 / 1): cars 0.60 / 0.66 against 0.87 / 0.87 m/s, buses 0.62 / 0.75 against 0.77 / 0.88, bicycles
0.39 / 0.68 against 0.89 / 1.09 (3 / 10 of them), trucks 0.66 / 0.73 against 0.68 / 0.81,
motorcycles 1.20 / 1.09 against 0.94 / 1.39; walking pedestrians 1.27 / 1.25 against 1.32 /
1.27, 95 % / 77 % of them predicted standing: still nothing for the walkers, whose velocity the
head keeps near zero. Whether the sampling points find a walker's earlier position was not
measured; the instances' own history (queries carried from frame to frame, StreamPETR /
Sparse4D) is what is left untried.

The last decoder layer searches the history frame's cameras for where each query's object was
(session 22, 5 Dec 2026; the two seeds trained side by side on one thread each of the 2-core AMD
EPYC: 3.55 s per iteration each, not comparable with the rows above; alone on 2 threads a short
run logs 1.95 s at iteration 20, the config without the search 1.78 over its whole run): deformable
attention cannot search (its offsets and weights come from the query alone), so ``history_match``
(:class:`HistoryMatch`) compares the current frame's stride-8 features at each query's 3D point
with the history frame's at 9 x 9 candidate points 0.5 m apart around it (+-2 m, through the ego
motion as ``history_attn``), one key projection for both frames (64 channels, 4 heads), and adds an
MLP of each head's expected displacement and peak probability to the query (zero-initialised,
forked generators: the no-history rows stand for it too):

    python tools/train.py $CONFIG --work-dir work_dirs/bev_tmp_match_s0
    # seed 1: --work-dir work_dirs/bev_tmp_match_s1 --cfg-options randomness.seed=1

    config                                  seed  NDS     mAP     mATE  mASE  mAOE  mAVE    mAAE
    + search (this config)                  0     0.4047  0.2841  0.76  0.21  0.94  0.3612  0.10
    + history cameras (session 21)          0     0.3894  0.2602  0.78  0.23  0.92  0.3499  0.13
    without history (session 18)            0     0.4129  0.2861  0.77  0.23  0.77  0.4253  0.10
    + search (this config)                  1     0.4369  0.3278  0.68  0.23  0.91  0.3353  0.12
    + history cameras (session 21)          1     0.4356  0.2935  0.69  0.22  0.74  0.3530  0.11
    without history (session 18)            1     0.4069  0.2855  0.72  0.25  0.80  0.4592  0.13

(900 iterations: NDS 0.3152 / 0.3286, mAVE 0.4167 / 0.3481.) mAVE against the same config without
history: 15 % lower on seed 0, 27 % on seed 1 (mean 21 %; 20 % without the search):
**issue 14's velocity target (30 % lower) not reached**. Kept on by the rule of session 21, fixed
before the runs: mean mAVE 0.3483 against 0.3515, mean NDS 0.4208 against 0.4125 (mAP 0.306
against 0.277). The gain is detection more than velocity. Per class (``compare_matched.py``, each
model's own matches of moving objects, seed 0 / 1): cars 0.55 / 0.59 m/s, buses 0.62 / 0.67,
trucks 0.59 / 0.59, motorcycles 1.21 / 1.18, walking pedestrians 1.28 / 1.24 with 68 % / 86 % of
them predicted standing. Does the search find where the object was? ``tools/analysis/match_probe.py``
(the last layer's expected displacement at the query nearest each object, against minus its
velocity times the 1 s gap; error of the found displacement / of guessing no motion, share
pointing the right way, seed 0 / 1): walking pedestrians 1.25 / 1.28 m and 63 %, 1.21 / 1.27 m and
61 % (257 / 296 of them); cars 6.37 / 6.39 m (they move 6.4 m in the second, beyond the +-2 m
the search spans); standing objects 0.14-0.46 m. The search barely finds the walkers (a 9 x 9
cosine match on one stride-8 level of 128 channels, trained only through the velocity loss
reaching it from a zero-initialised read-out, 1800 iterations).

The search trained on where the objects were, and the queue normalised as the sample's frame
(session 23, 5-6 Dec 2026; the two seeds side by side on one thread each, 3.60 / 3.60 s per
iteration): ``history_match.loss_weight=0.5`` trains the search itself at each ground-truth
object's centre (cross-entropy of each head's softmax against where the object was, minus its
velocity times the 1 s gap, spread bilinearly on the 9 x 9 candidates; objects whose earlier
place is outside the +-2 m square do not count: cars, motorcycles and bicycles mostly), and
``queue_norm='batch'`` normalises the queue's earlier frames with their batch's BN statistics as
the sample's own frame (with the running statistics the key features of the same images differ,
cosine 0.80-0.86 on average, 10th percentile 0.43-0.61, so the search compared frames normalised
two ways in training). Both measured together; the no-history rows stand (no queue, no loss):

    python tools/train.py $CONFIG --work-dir work_dirs/bev_tmp_bnq_s0 --cfg-options \
        model.bbox_head.decoder.history_match.loss_weight=0.5 model.queue_norm=batch
    # seed 1: --work-dir work_dirs/bev_tmp_bnq_s1 and randomness.seed=1 among the options

    config                                  seed  NDS     mAP     mATE  mASE  mAOE  mAVE    mAAE
    + search loss, batch BN queue (23)      0     0.4061  0.2738  0.75  0.24  0.86  0.3385  0.12
    + search (session 22)                   0     0.4047  0.2841  0.76  0.21  0.94  0.3612  0.10
    without history (session 18)            0     0.4129  0.2861  0.77  0.23  0.77  0.4253  0.10
    + search loss, batch BN queue (23)      1     0.4130  0.2857  0.75  0.24  0.84  0.3326  0.13
    + search (session 22)                   1     0.4369  0.3278  0.68  0.23  0.91  0.3353  0.12
    without history (session 18)            1     0.4069  0.2855  0.72  0.25  0.80  0.4592  0.13

(900 iterations: NDS 0.3058 / 0.3268, mAVE 0.3426 / 0.2945.) mAVE against the same config without
history: 20 % lower on seed 0, 28 % on seed 1: **issue 14's velocity target (30 % lower) not
reached** (mean 24 %; session 22's config: 21 %). Not kept on, by session 21's rule fixed before
the runs (lower mean mAVE and mean NDS not 0.01 lower): mean mAVE 0.3356 against session 22's
0.3483 (lower), but mean NDS 0.4096 against 0.4208 (0.011 lower) and mean mAP 0.280 against 0.306;
the config keeps session 22's settings (``loss_weight`` 0, ``queue_norm`` 'running'), and the rows
above are reproduced with ``--cfg-options model.bbox_head.decoder.history_match.loss_weight=0.5
model.queue_norm=batch``. Per class velocity error (the metric's, seed 0 / 1): car 0.36 / 0.37,
truck 0.19 / 0.20, bus 0.38 / 0.32, motorcycle 0.64 / 0.64, pedestrian 0.96 / 0.97, bicycle 0.14 /
0.14 (session 22's seed 0: car 0.39, motorcycle 0.70, pedestrian 0.98). The loss itself barely
falls: ``loss_match`` (times 0.5) from 2.3 to about 2.0 over the run, against log(81) / 2 = 2.20
for a uniform softmax, and ``match_probe.py --at object`` on the iteration-250 checkpoint finds
the walkers no better than guessing no motion (1.30 m against 1.28 m); the learned scale of the
similarities falls (10 -> 9.3) instead of sharpening. The objects are flat-coloured boxes, and a
walker 30 m away spans less than one stride-8 cell: this level cannot place it to half a metre.

The earlier frames' detections in the velocity (session 24, 6 Dec 2026; the two seeds side by
side on one thread each, 3.75 s per iteration against session 23's 3.60): the tracker of session
19's note, inside the model and trained. ``bbox_head.history_track`` (:class:`HistoryTrack`) has
the detector decode the two history frames (1 s and 2 s before) with the head, in eval mode
without gradients as their BEVs are built, moves their top 100 boxes into the current frame by
the ego motion from the poses, and associates each query softly with where its object was
(``-|forecast - centre|^2 / (2 sigma^2) + log(class agreement)`` against a learned "none", the
forecast being the earlier box moved on by its own velocity); a gate that starts closed (an MLP of
each frame's displacement, confidence and speed and the class probabilities) blends
``(now - then) / gap`` into the last layer's velocity. No earlier frame, no module run (forked
generators: the no-history rows stand):

    python tools/train.py $CONFIG --work-dir work_dirs/bev_tmp_track_s0 --cfg-options \
        model.bbox_head.history_track.num_frames=2 model.bbox_head.history_track.top_k=100
    # seed 1: --work-dir work_dirs/bev_tmp_track_s1 and randomness.seed=1 among the options

    config                                  seed  NDS     mAP     mATE  mASE  mAOE  mAVE    mAAE
    + earlier detections (24)               0     0.4236  0.2851  0.75  0.22  0.74  0.3620  0.12
    + search (session 22)                   0     0.4047  0.2841  0.76  0.21  0.94  0.3612  0.10
    without history (session 18)            0     0.4129  0.2861  0.77  0.23  0.77  0.4253  0.10
    + earlier detections (24)               1     0.4489  0.3260  0.70  0.22  0.75  0.3495  0.13
    + search (session 22)                   1     0.4369  0.3278  0.68  0.23  0.91  0.3353  0.12
    without history (session 18)            1     0.4069  0.2855  0.72  0.25  0.80  0.4592  0.13

(900 iterations: NDS 0.3108 / 0.3350, mAVE 0.3654 / 0.3794.) mAVE against the same config without
history: 15 % lower on seed 0, 24 % on seed 1 (mean 19 %): **issue 14's velocity target (30 %
lower) not reached**. Not kept, by session 21's rule (lower mean mAVE, mean NDS not 0.01 lower):
mean mAVE 0.3558 against session 22's 0.3483 (higher), though the mean NDS is the best of any row,
0.4363 against 0.4208 (mAOE 0.74 / 0.75 against 0.94 / 0.91; one run per seed, and seeds differ by
as much). Per class velocity error (the metric's, seed 0 / 1; session 22's in brackets): car 0.46 /
0.40 (0.39 / 0.34), bus 0.41 / 0.54 (0.36 / 0.43), motorcycle 0.69 / 0.59 (0.70 / 0.62),
pedestrian 0.91 / 0.88 (0.98 / 0.89), bicycle 0.17 / 0.12 (0.19 / 0.13). The gate opened only a
little (its last layer's weight norm 0 -> 0.98 / 1.21, biases 0.02; sigma 1.5 -> 1.05 / 0.96 m).
The seed-0 weights tested without the module (``--cfg-options model.bbox_head.history_track=None``,
the same BEV and boxes): mAVE 0.3792 against 0.3620, NDS 0.4220 against 0.4236, mAOE 0.74 either
way; per class car 0.49, bus 0.45, motorcycle 0.72, pedestrian 0.91 (0.91 with it): the module
lowers the vehicles' velocity error by 5-10 % and does nothing for the walkers, whose association
with where they were 1-2 s ago (1-3 m at 0.7-0.8 m position error, mATE) the gate does not trust.
The mAOE gain is not the module's at test time (the two trainings differ from the second step on).

History 2 s back (session 25, 6 Dec 2026; the two seeds side by side on one thread each of the
2-core AMD EPYC, median 3.75 / 3.73 s per iteration against session 24's 3.75): the queue and the
test chain take every fourth frame (``queue_stride=4``, ``history_stride=4``), so the history BEV
and the history frame's cameras are 2 s old and a walker has moved 1.8-3.2 m (about one 2.05 m
cell; 0.9-1.6 m at 1 s), and the search spans +-3 m (``history_match.radius=3.0``, 9 x 9
candidates 0.75 m apart) so that it still reaches them. The no-history rows stand (no queue):

    python tools/train.py $CONFIG --work-dir work_dirs/bev_tmp_2s_s0   # the config as committed now
    # seed 1: --work-dir work_dirs/bev_tmp_2s_s1 --cfg-options randomness.seed=1

    config                                  seed  NDS     mAP     mATE  mASE  mAOE  mAVE    mAAE
    history 2 s back (this config)          0     0.4099  0.2887  0.75  0.24  0.89  0.3414  0.13
    history 1 s back (session 22)           0     0.4047  0.2841  0.76  0.21  0.94  0.3612  0.10
    without history (session 18)            0     0.4129  0.2861  0.77  0.23  0.77  0.4253  0.10
    history 2 s back (this config)          1     0.4378  0.3056  0.71  0.22  0.78  0.3228  0.12
    history 1 s back (session 22)           1     0.4369  0.3278  0.68  0.23  0.91  0.3353  0.12
    without history (session 18)            1     0.4069  0.2855  0.72  0.25  0.80  0.4592  0.13

(900 iterations: NDS 0.3215 / 0.3345, mAVE 0.3498 / 0.3738.) mAVE against the same config without
history: 19.7 % lower on seed 0, 29.7 % on seed 1 (the mean 25 % lower): **issue 14's velocity
target (30 % lower) not reached**, the closest yet. Kept, by session 21's rule fixed before the
runs (lower mean mAVE, mean NDS not 0.01 lower): mean mAVE 0.3321 against session 22's 0.3483, mean
NDS 0.4239 against 0.4208 (mean mAP 0.297 against 0.306). Per class velocity error (the metric's,
seed 0 / 1; the 1 s history's in brackets): car 0.43 / 0.41 (0.39 / 0.34), truck 0.23 / 0.16 (0.24
/ 0.23), bus 0.52 / 0.36 (0.36 / 0.43), motorcycle 0.52 / 0.53 (0.70 / 0.62), bicycle 0.07 / 0.13
(0.19 / 0.13), pedestrian 0.92 / 0.96 (0.98 / 0.89): the two-wheelers gain, the cars lose a
little (they move 8-20 m in 2 s), and the pedestrians, the largest term, are where they were.
The seed-0 weights tested without history (``--cfg-options model.video_test=False``): NDS 0.3393,
mAP 0.1899, mAVE 0.4946 (car 0.62, motorcycle 0.74, pedestrian 0.96): the model leans on the
history for detection and velocity alike, and its walkers' error is the same without it.
The rows of sessions 22-24 are reproduced from this config with
``train_dataloader.dataset.queue_stride=2 model.history_stride=2
model.bbox_head.decoder.history_match.radius=2.0`` among the options.

The search on the backbone's stride-4 level, trained on where the objects were (session 26, 6 Dec
2026; the two seeds side by side on one thread each, median 3.74 / 3.76 s per iteration against
session 25's 3.75 / 3.73): session 23 found the stride-8 level cannot place a walker to half a
metre, so ``model.fine_level=True`` keeps the backbone's first output (32 channels, stride 4,
100 x 56 per camera; ``img_backbone.out_indices=(0, 1, 2, 3)``, the neck still taking the other
three) and ``history_match.level='fine'`` searches it (``fine_dims=32``), with session 23's loss
(``loss_weight=0.5``) and batch-normalised queue (``queue_norm='batch'``), all on the 2 s history.
The neck's levels and a model without an earlier frame are unchanged (tests; the first three
no-history iterations log the same losses and gradient norms), so the no-history rows stand:

    python tools/train.py $CONFIG --work-dir work_dirs/bev_tmp_fine_s0 --cfg-options \
        model.fine_level=True "model.img_backbone.out_indices=(0,1,2,3)" \
        model.bbox_head.decoder.history_match.level=fine \
        model.bbox_head.decoder.history_match.fine_dims=32 \
        model.bbox_head.decoder.history_match.loss_weight=0.5 model.queue_norm=batch
    # seed 1: --work-dir work_dirs/bev_tmp_fine_s1 and randomness.seed=1 among the options

    config                                  seed  NDS     mAP     mATE  mASE  mAOE  mAVE    mAAE
    + stride-4 search, loss, batch BN (26)  0     0.4243  0.3034  0.68  0.23  0.88  0.3676  0.12
    history 2 s back (this config)          0     0.4099  0.2887  0.75  0.24  0.89  0.3414  0.13
    without history (session 18)            0     0.4129  0.2861  0.77  0.23  0.77  0.4253  0.10
    + stride-4 search, loss, batch BN (26)  1     0.4196  0.3028  0.70  0.23  0.88  0.3801  0.13
    history 2 s back (this config)          1     0.4378  0.3056  0.71  0.22  0.78  0.3228  0.12
    without history (session 18)            1     0.4069  0.2855  0.72  0.25  0.80  0.4592  0.13

(900 iterations: NDS 0.3258 / 0.3400, mAVE 0.3970 / 0.3782.) mAVE against the same config without
history: 13.6 % / 17.2 % lower: **issue 14's velocity target (30 % lower) not reached**, further
from it than this config. Not kept, by session 21's rule fixed before the runs: mean mAVE 0.3739
against this config's 0.3321 (higher), mean NDS 0.4220 against 0.4239 (mean mAP 0.303 against
0.297). Per class velocity error (seed 0 / 1): car 0.34 / 0.39, truck 0.21 / 0.19, bus 0.47 /
0.43, motorcycle 0.60 / 0.81, bicycle 0.20 / 0.16, pedestrian 1.07 / 1.03 (this config's 0.92 /
0.96): the walkers are worse. ``loss_match`` ends near 2.10 against 2.20 for a uniform softmax
(log(81) / 2), and ``match_probe.py --at object`` on the final weights finds the walkers (767 of
the val's, moving at least 0.5 m/s) 2.52 / 2.51 m from where they were against 2.56 m for guessing
no motion, 61 % / 60 % pointing the right way (this config's seed 0, stride 8, no loss: 2.62 m and
59 %); standing objects 0.56-0.79 m. The finer level did not make the search find the walkers.
A throwaway oracle (not in the repository) that searched with the images' own pixels instead (3 x
3 colour patches at full resolution, or 5 x 5 mean-subtracted patches at half resolution, cosine
times 50) did worse still (walkers 2.96 m, standing objects 1.46-1.71 m): the flat-coloured boxes
give a centre-point match little to go on, whatever the resolution.

Query propagation (session 27, 6 Dec 2026; the two seeds side by side on one thread each, median
3.92 / 3.90 s per iteration against session 25's 3.75 / 3.73): StreamPETR's and Sparse4D's
answer to the association that broke session 24's tracker, ``bbox_head.query_propagation=dict(
top_k=100)`` (:class:`QueryPropagation`): the detector decodes the history frame (2 s before) as
queue training and video testing build it (each earlier frame starting from the queries of the one
before it), and its top 100 queries, moved into the current frame by the ego motion from the
poses, start the last 100 of the 300 matching queries (content and position read from their
earlier outputs and centres, the centres as reference points); the displacement of each one's box
since then, over the gap, is blended into its velocity by a gate read from its output (0.5 at
first). A model without an earlier frame is the plain one (tests), so the no-history rows stand:

    python tools/train.py $CONFIG --work-dir work_dirs/bev_tmp_prop_s0 \
        --cfg-options model.bbox_head.query_propagation.top_k=100
    # seed 1: --work-dir work_dirs/bev_tmp_prop_s1 and randomness.seed=1 among the options

    config                                  seed  NDS     mAP     mATE  mASE  mAOE  mAVE    mAAE
    + query propagation (27)                0     0.3803  0.2024  0.71  0.22  0.83  0.3557  0.10
    history 2 s back (this config)          0     0.4099  0.2887  0.75  0.24  0.89  0.3414  0.13
    without history (session 18)            0     0.4129  0.2861  0.77  0.23  0.77  0.4253  0.10
    + query propagation (27)                1     0.3737  0.2160  0.77  0.22  0.87  0.3864  0.11
    history 2 s back (this config)          1     0.4378  0.3056  0.71  0.22  0.78  0.3228  0.12
    without history (session 18)            1     0.4069  0.2855  0.72  0.25  0.80  0.4592  0.13

(900 iterations: NDS 0.2865 / 0.3003, mAVE 0.4045 / 0.4105.) mAVE against the same config without
history: 16.4 % / 15.9 % lower: **issue 14's velocity target (30 % lower) not reached**. Not kept,
by session 21's rule fixed before the runs: mean mAVE 0.3711 against this config's 0.3321, mean
NDS 0.3770 against 0.4239 (mean mAP 0.209 against 0.297: the 100 carried queries cost detection).
Per class velocity error (seed 0 / 1): car 0.39 / 0.55, truck 0.21 / 0.24, bus 0.45 / 0.37,
motorcycle 0.68 / 0.81, bicycle 0.15 / 0.15, pedestrian 0.93 / 0.95. Why (a throwaway probe on
the seed-0 weights, each val object matched to the nearest prediction of its class scoring at
least 0.2 within 2 m): the gate closed (0.01-0.02 on the matched carried queries); carried queries
find 174 of the 432 walkers found (46 %) and 157 of the 476 cars, with the velocity error of the
learned queries (walkers 0.89 against 0.84 m/s); their own displacement over the gap is no
measurement of the object's motion: 1.10 m/s off for the moving walkers (57 % pointing the right
way), 5.6 m/s for the moving cars (38 %): after 1800 iterations a carried query does not stay on
its object from one frame to the next, so the query is not yet its own association here.

The search in every decoder layer (session 28, 6 Dec 2026; the two seeds side by side on one thread
each, median 4.52 / 4.54 s per iteration against session 25's 3.75 / 3.73; alone on 2 threads a
6-iteration smoke logs 2.57 s against 2.38): ``history_match.layers=[0,1,2]`` has each of the three
decoder layers search the history frame's cameras around its own reference point, so that the
later layers search again from the boxes the earlier ones refined (no new code: the option was
there since session 22; zero-initialised read-outs, first-iteration loss 45.2540 as the config's):

    python tools/train.py $CONFIG --work-dir work_dirs/bev_tmp_all_s0 \
        --cfg-options "model.bbox_head.decoder.history_match.layers=[0,1,2]"
    # seed 1: --work-dir work_dirs/bev_tmp_all_s1 and randomness.seed=1 among the options

    config                                  seed  NDS     mAP     mATE  mASE  mAOE  mAVE    mAAE
    + search in every layer (28)            0     0.4052  0.2897  0.75  0.22  0.97  0.3498  0.12
    history 2 s back (this config)          0     0.4099  0.2887  0.75  0.24  0.89  0.3414  0.13
    without history (session 18)            0     0.4129  0.2861  0.77  0.23  0.77  0.4253  0.10
    + search in every layer (28)            1     0.4179  0.2890  0.73  0.24  0.81  0.3528  0.13
    history 2 s back (this config)          1     0.4378  0.3056  0.71  0.22  0.78  0.3228  0.12
    without history (session 18)            1     0.4069  0.2855  0.72  0.25  0.80  0.4592  0.13

(900 iterations: NDS 0.3176 / 0.3291, mAVE 0.3905 / 0.3549.) mAVE against the same config without
history: 17.8 % / 23.2 % lower: **issue 14's velocity target (30 % lower) not reached**. Not kept,
by session 21's rule fixed before the runs: mean mAVE 0.3513 against this config's 0.3321, mean
NDS 0.4116 against 0.4239. Per class velocity error (seed 0 / 1; this config's in brackets): car
0.35 / 0.36 (0.43 / 0.41), truck 0.17 / 0.20 (0.23 / 0.16), bus 0.29 / 0.46 (0.52 / 0.36),
motorcycle 0.77 / 0.71 (0.52 / 0.53), bicycle 0.16 / 0.15 (0.07 / 0.13), pedestrian 1.02 / 0.90
(0.92 / 0.96): the vehicles gain a little, the two-wheelers lose, and the walkers, the largest
term, are where every row of this docstring has left them (mostly predicted standing: session 22's
probe).

Both rows on the same threads (session 29, 6 Dec 2026): seeded runs repeat bit for bit only on
the same number of threads. With ``OMP_NUM_THREADS`` 1 and 2 the same 6-iteration smoke of the
config without history logs the same first loss (45.5756) and parts in the fourth decimal from the
second iteration on (41.9213 against 41.9214), and 1800 iterations carry that apart as far as two
seeds. The history rows above since session 22 trained on one thread each, two side by side; the
no-history rows (session 18) on 2 threads, as the rows of sessions 19-21, whose comparisons stand.
Trained again on one thread, beside another training, as the history rows were (median 2.07 /
2.09 s per iteration):

    OMP_NUM_THREADS=1 python tools/train.py $CONFIG --work-dir work_dirs/bev_nohist_1t_s0 \
        --cfg-options train_dataloader.dataset.queue_length=1 train_dataloader.dataset.queue_range=0 \
        model.video_test=False
    # seed 1: --work-dir work_dirs/bev_nohist_1t_s1 and randomness.seed=1 among the options; the
    # history rows: the commands above with OMP_NUM_THREADS=1. (Seed 0 ran with
    # "model.bbox_head.code_weights=[1,1,1,1,1,1,1,1,1,1]" among the options too, the _base_'s
    # [1.0] * 10 already: its history twin logged the losses of session 25 to the fourth decimal
    # and its 900-iteration val to the figure, NDS 0.3215, mAVE 0.3498.)

    config                                  seed  NDS     mAP     mATE  mASE  mAOE  mAVE    mAAE
    history 2 s back (this config, 1 thr)   0     0.4099  0.2887  0.75  0.24  0.89  0.3414  0.13
    without history, 1 thread (29)          0     0.3821  0.2494  0.74  0.25  0.92  0.4081  0.11
    without history, 2 threads (18)         0     0.4129  0.2861  0.77  0.23  0.77  0.4253  0.10
    history 2 s back (this config, 1 thr)   1     0.4378  0.3056  0.71  0.22  0.78  0.3228  0.12
    without history, 1 thread (29)          1     0.3962  0.2738  0.76  0.24  0.83  0.4253  0.15
    without history, 2 threads (18)         1     0.4069  0.2855  0.72  0.25  0.80  0.4592  0.13

(900 iterations without history, one thread: NDS 0.2900 / 0.2819, mAVE 0.3861 / 0.4720.) On
the same threads the history lowers mAVE by 16.3 % on seed 0 (0.3414 against 0.4081) and by
24.1 % on seed 1 (0.3228 against 0.4253; the means 0.3321 against 0.4167: 20.3 %): **issue 14's
velocity target (30 % lower) not reached**, further from it than the 19.7 % / 29.7 % measured
against the 2-thread rows; the NDS target is met, and the history's NDS lead grows (0.4099 against
0.3821, 0.4378 against 0.3962). Per class velocity error without history on one thread (seed 0 /
1; the history's in brackets): car 0.67 / 0.68 (0.43 / 0.41), bus 0.61 / 0.55 (0.52 / 0.36),
motorcycle 0.56 / 0.66 (0.52 / 0.53), pedestrian 1.02 / 0.94 (0.92 / 0.96). Runs that differ only
in their threads differ as much as two seeds (NDS 0.3821 against 0.4129): a difference of a few
per cent between two rows here is inside that spread.

The history read where the velocity says the object was (session 30, 6 Dec 2026; the two seeds
side by side on one thread each, median 3.53 / 3.51 s per iteration, the full test suite beside
them for 4 minutes): at 2 s a car has moved 8-20 m, so the history frame's cameras around where
it is now (``history_attn``, the search's +-3 m) show empty road. ``decoder.motion_compensation``
has every layer from the second on look in the earlier frame at its refined reference point moved
back by the previous layer's velocity times the gap (``geometry.moved_back``; Sparse4D's and
StreamPETR's motion-compensated reads), the first layer and the BEV cross-attention as before. No
new parameters; the first-iteration loss is the config's (45.2540), and without an earlier frame
the model is the plain one (tests), so the no-history rows stand:

    OMP_NUM_THREADS=1 python tools/train.py $CONFIG --work-dir work_dirs/bev_tmp_mc_s0 \
        --cfg-options model.bbox_head.decoder.motion_compensation=True
    # seed 1: --work-dir work_dirs/bev_tmp_mc_s1 and randomness.seed=1 among the options

    config                                  seed  NDS     mAP     mATE  mASE  mAOE  mAVE    mAAE
    + motion compensation (30)              0     0.4220  0.2929  0.70  0.23  0.84  0.3535  0.13
    history 2 s back (this config, 1 thr)   0     0.4099  0.2887  0.75  0.24  0.89  0.3414  0.13
    without history, 1 thread (29)          0     0.3821  0.2494  0.74  0.25  0.92  0.4081  0.11
    + motion compensation (30)              1     0.4249  0.2992  0.72  0.23  0.86  0.3258  0.12
    history 2 s back (this config, 1 thr)   1     0.4378  0.3056  0.71  0.22  0.78  0.3228  0.12
    without history, 1 thread (29)          1     0.3962  0.2738  0.76  0.24  0.83  0.4253  0.15

(900 iterations: NDS 0.3301 / 0.3386, mAVE 0.4060 / 0.3184.) mAVE against the same config without
history on the same threads: 13.4 % / 23.4 % lower (this config: 16.3 % / 24.1 %): **issue 14's
velocity target (30 % lower) not reached**. Not kept, by session 21's rule fixed before the runs:
mean mAVE 0.3397 against this config's 0.3321 (higher), mean NDS 0.4235 against 0.4239 (on since
session 33, with the velocity votes: the last section). What it
was for, it does: the cars' velocity error falls on both seeds, 0.32 / 0.35 against 0.43 / 0.41
(the no-history rows' 0.67 / 0.68), the buses' on seed 0 (0.32 against 0.52; seed 1 0.43 against
0.36); the motorcycles (0.78 / 0.37 against 0.52 / 0.53) and the walkers (0.98 / 1.07 against
0.92 / 0.96; mostly predicted standing in the probes of sessions 17-22, so little to compensate)
move by as much as two seeds do, and the walkers, the largest term, decide the mean. Per class
(seed 0 / 1): truck 0.20 / 0.21, bicycle 0.18 / 0.15, trailer 0.02 / 0.01, construction vehicle
0.03 / 0.01.

The earlier detections associated by a per-class speed (session 31, 6 Dec 2026; the two seeds side
by side on one thread each, median 3.89 / 3.91 s per iteration): session 24's ``history_track``
(the detections of the frames 2 s and 4 s before now) associated each query only with detections
whose own velocity forecast lands near it, one learned sigma of about 1 m, so a walker predicted
standing, 2.5 m and 5 m on, stayed with "none". ``history_track.speed_sigma=1.5`` makes the scale
per class and per second of gap (3 m at 2 s, 6 m at 4 s, learned per class), and
``history_track.conditional=True`` takes the displacement given an association, not shrunk by
the confidence (:class:`HistoryTrack`; the tests find such a walker at 1.25 m/s from both frames,
84 % confident, where one sigma of 1 m gives 24 % and 0.003 %). The gate starts closed and the
module runs only with an earlier frame: the first-iteration loss is the config's (45.2540) and the
no-history rows stand:

    OMP_NUM_THREADS=1 python tools/train.py $CONFIG --work-dir work_dirs/bev_tmp_track2_s0 \
        --cfg-options model.bbox_head.history_track.num_frames=2 \
        model.bbox_head.history_track.top_k=100 model.bbox_head.history_track.speed_sigma=1.5 \
        model.bbox_head.history_track.conditional=True
    # seed 1: --work-dir work_dirs/bev_tmp_track2_s1 and randomness.seed=1 among the options

    config                                  seed  NDS     mAP     mATE  mASE  mAOE  mAVE    mAAE
    + speed-scaled detections (31)          0     0.4213  0.2880  0.70  0.24  0.82  0.3657  0.11
    history 2 s back (this config, 1 thr)   0     0.4099  0.2887  0.75  0.24  0.89  0.3414  0.13
    without history, 1 thread (29)          0     0.3821  0.2494  0.74  0.25  0.92  0.4081  0.11
    + speed-scaled detections (31)          1     0.4347  0.3125  0.71  0.22  0.83  0.3400  0.12
    history 2 s back (this config, 1 thr)   1     0.4378  0.3056  0.71  0.22  0.78  0.3228  0.12
    without history, 1 thread (29)          1     0.3962  0.2738  0.76  0.24  0.83  0.4253  0.15

(900 iterations: NDS 0.3246 / 0.3230, mAVE 0.3972 / 0.3610.) mAVE against the same config without
history on the same threads: 10.4 % / 20.1 % lower (this config: 16.3 % / 24.1 %): **issue 14's
velocity target (30 % lower) not reached**. Not kept, by session 21's rule: mean mAVE 0.3529
against this config's 0.3321 (higher; mean NDS 0.4280 against 0.4239). The walkers are where they
were, 0.91 / 0.97 (0.92 / 0.96); car 0.38 / 0.35 (0.43 / 0.41), bus 0.47 / 0.45 (0.52 / 0.36),
motorcycle 0.67 / 0.52 (0.52 / 0.53). The gate hardly opened: its last layer's weight norm 0 ->
0.24 / 0.11 in 1800 iterations (session 24's 0.98 / 1.21), the per-class scales drifted from 1.5
to 1.1-1.4 m/s together (pedestrian 1.20 / 1.29), and the seed-0 weights tested without the module
(``--cfg-options model.bbox_head.history_track=None``) give mAVE 0.3701 against 0.3657, walkers
0.913 against 0.912, NDS 0.4208 against 0.4213: the association can reach the walkers now (the
tests), the trained model does not use it, and rightly: the same weights with the gate forced
open on one frame (its last layer's weights zeroed, bias (1, 0) or (0, 1): the velocity is the
association's alone) give mAVE 0.8467 from the 2 s frame and 1.4766 from the 4 s frame, walkers
0.92 / 1.05 against the head's 0.91, cars 1.46 / 3.36: the module's soft association of the
earlier detections (walkers' position error 0.85 m, AP 0.42 at 2 m) does not bring the walkers'
direction (session 32, below: the detections themselves do carry it).

What the detections carry, and trackers on them (session 32, 6-7 Dec 2026). This config trained
again, the two seeds side by side on one thread each (``--work-dir work_dirs/bev_tmp_commit_s0``,
``_s1`` with ``randomness.seed=1``), repeats session 25's rows to the last figure (900 iterations:
NDS 0.3215 / 0.3345, mAVE 0.3498 / 0.3738; 1800: NDS 0.4099 / 0.4378, mAP 0.2887 / 0.3056, mAVE
0.3414 / 0.3228). ``tools/analysis/track_direction.py`` on their dumps (``--gaps 1 4 8``, score >=
0.2; seed 0 / 1): the velocity that a moving object's own two detections give, displacement over
the gap, against the head's velocity error on the same objects, and the share of the objects
detected at t also detected at t - g:

    class        gap    two detections' / head's velocity error (m/s)    detected at t - g too
    pedestrian   0.5 s  2.45 / 1.25,  2.13 / 1.34                         74 %, 71 %
    pedestrian   2 s    0.66 / 1.27,  0.63 / 1.32                         51 %, 50 %
    pedestrian   4 s    0.39 / 1.30,  0.28 / 1.49                         29 %, 33 %
    car          4 s    0.20 / 0.39,  0.20 / 0.37                         46 %, 41 %
    bus          4 s    0.25 / 0.69,  0.20 / 0.53                         40 %, 39 %

The walkers' direction is in the detections (4 s apart: the right way 100 %, a velocity 3-5 times
better than the head's), where the two detections are of the same walker; what fails is finding
which earlier detection is the walker's: a walker moves 0.6 m per frame against a 0.9 m position
error, and its earlier self 2-5 m away competes with standing pedestrians on the curb 1-3 m
beside the walkway and with low-score duplicates. Offline sketches on the nuScenes result files
(``/tmp`` scripts, not in the toolbox; designed on session 30's seed-0 dump of the same val
scenes, so tuned on val): a greedy two-frame association (2 s / 4 s; gates from 1 m around the
velocity forecast to the class's top speed), a CenterPoint-like online tracker (greedy per frame,
tracks kept 2 s unmatched, the velocity the least-squares slope of the last 4 s where it exceeds
0.5 m/s) and a posterior over velocity hypotheses for every class all raise mAVE (0.39-1.16
against 0.35: the static and vehicle classes pick up the position noise). For pedestrians alone,
constant-velocity voting over the 8 earlier frames (each hypothesis within +-2 m/s scored by the
score-weighted Gaussian, sigma 1 m, proximity of each frame's nearest detection to where it puts
the walker; the velocity the least-squares slope of the supporting detections where the support
exceeds 2) lowers the walkers' error on this config's dumps from 0.92 / 0.96 to 0.79 / 0.78 and
mAVE from 0.3414 / 0.3228 to 0.3243 / 0.2997 (NDS 0.4116 / 0.4401): 20.5 % / 29.5 % below the
no-history rows, mean 25.1 %: **issue 14's velocity target (30 % lower) not reached** by it either.
A test-time velocity refinement of this kind, inside the detector's video test, is the next step
the measurements point to (built in session 33: the last section).

The velocity from the detections, in the detector (session 33, 7 Dec 2026; ``velocity_refine``,
on). Video testing hands each frame's detections to :class:`VelocityRefiner`, which keeps those of
the 8 frames before (4 s) in the global frame (``lidar2global``) and gives each car, bus,
motorcycle and pedestrian the constant velocity its earlier detections support best: hypotheses on
a 0.25 m/s grid within 3 m/s (pedestrians 2 m/s) of the head's velocity, each scored by summing
over the earlier frames the score x Gaussian (sigma 1 m) of the class's detection nearest to where
the hypothesis puts the object then; the best one is taken where its support reaches 2 and beats
the head's own velocity by 0.75, and refined by the least-squares slope of the detections it lines
up. It starts again where the history does (a scene start, a gap). Nothing is learned. It is
session 32's pedestrian voting (whose grid was around 0 m/s) with the grid around the head's
velocity and the test against the head's own velocity that keeps a well supported one (standing
objects, the vehicles), for more classes. The
classes, the 8 frames and the thresholds were chosen on a second synthetic set, not on the val
scenes (``python tools/create_data.py synthetic --out data/nuscenes-synth-tune --preset learn
--seed 7``: other scenes from the same generator; its val split, 80 samples), on the weights
without motion compensation (session 32's ``work_dirs/bev_tmp_commit_s0``, ``_s1``) through an
offline sketch of the same voting (seeds 0 / 1): mAVE 0.3296 / 0.2923 as configured; with trucks
and bicycles too 0.3349 / 0.3065 (the trailers and construction vehicles worse as well); 12 frames
0.3335 / 0.2950, 16 the same on the mean (0.3340 / 0.2876); in an earlier variant (sigma 0.7 m for
the vehicles) a gain of 0.5, 1 or 2 no better on the mean than 0.75 (0.3128, 0.3130, 0.3249
against 0.3118), and every class voted without the gain test 0.3751 / 0.3484. On the same second
set the votes on session 30's motion-compensated weights (``work_dirs/bev_tmp_mc_s0``, ``_s1``,
trained side by side from scratch with this budget, the same config otherwise) gave the lower mean
mAVE and the higher mean NDS (0.3028 / 0.4398 against 0.3119 / 0.4342), so the config switched
``motion_compensation`` on with them; on the val scenes the keep rule of session 21 holds for both
steps (rows below). All rows of the same weights share their detections (mAP and the other errors;
mAAE moves because mmdet3d's metric calls a box moving from its velocity):

    CONFIG=configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224-temporal.py
    python tools/test.py $CONFIG work_dirs/bev_tmp_mc_s0/iter_1800.pth  # this config; seed 1: _s1
    python tools/test.py $CONFIG work_dirs/bev_tmp_mc_s0/iter_1800.pth \
        --cfg-options model.velocity_refine=None
    python tools/test.py $CONFIG work_dirs/bev_tmp_commit_s0/iter_1800.pth \
        --cfg-options model.bbox_head.decoder.motion_compensation=False [model.velocity_refine=None]
    # the second set: --cfg-options test_dataloader.dataset.data_root=data/nuscenes-synth-tune/ \
    #     test_evaluator.data_root=data/nuscenes-synth-tune/ \
    #     test_evaluator.ann_file=data/nuscenes-synth-tune/nuscenes_infos_val.pkl

    data        config                               seed  NDS     mAP     mATE  mASE  mAOE  mAVE    mAAE
    val         this config (33)                     0     0.4247  0.2929  0.70  0.23  0.84  0.3264  0.13
    val         velocity_refine=None (30)            0     0.4220  0.2929  0.70  0.23  0.84  0.3535  0.13
    val         no motion compensation (32)          0     0.4131  0.2887  0.75  0.24  0.89  0.3128  0.13
    val         neither (25, 32)                     0     0.4099  0.2887  0.75  0.24  0.89  0.3414  0.13
    val         without history, 1 thread (29)       0     0.3821  0.2494  0.74  0.25  0.92  0.4081  0.11
    val         this config (33)                     1     0.4265  0.2992  0.72  0.23  0.86  0.3111  0.12
    val         velocity_refine=None (30)            1     0.4249  0.2992  0.72  0.23  0.86  0.3258  0.12
    val         no motion compensation (32)          1     0.4368  0.3056  0.71  0.22  0.78  0.3311  0.12
    val         neither (25, 32)                     1     0.4378  0.3056  0.71  0.22  0.78  0.3228  0.12
    val         without history, 1 thread (29)       1     0.3962  0.2738  0.76  0.24  0.83  0.4253  0.15
    second set  this config (33)                     0     0.4369  0.3310  0.67  0.22  1.06  0.3125  0.08
    second set  velocity_refine=None (30)            0     0.4309  0.3310  0.67  0.22  1.06  0.3727  0.08
    second set  no motion compensation (32)          0     0.4237  0.3210  0.73  0.22  1.09  0.3299  0.09
    second set  neither (25, 32)                     0     0.4145  0.3210  0.73  0.22  1.09  0.4107  0.11
    second set  this config (33)                     1     0.4426  0.3428  0.71  0.21  0.98  0.2930  0.10
    second set  velocity_refine=None (30)            1     0.4356  0.3428  0.71  0.21  0.98  0.3603  0.10
    second set  no motion compensation (32)          1     0.4447  0.3495  0.67  0.22  1.02  0.2938  0.12
    second set  neither (25, 32)                     1     0.4404  0.3495  0.67  0.22  1.02  0.3352  0.12

("no motion compensation": the votes on session 32's weights; "neither": the config of sessions
25-32.) On the val scenes mAVE is 20.0 % / 26.9 % below the same config without history (mean
0.3188 against 0.4167: 23.5 %; without motion compensation 23.4 % / 22.1 %, mean 22.7 %): **issue
14's velocity target (30 % lower) not reached**. Session 21's rule: the votes lower the mean mAVE
on the weights without motion compensation (0.3220 against 0.3321, mean NDS 0.4250 against
0.4239), and with it (0.3188, NDS 0.4256): kept. Per class on val (seed 0 / 1; the votes off in
brackets): on the motion-compensated weights pedestrian 0.82 / 0.94 (0.98 / 1.07), car 0.34 / 0.33
(0.32 / 0.35), bus 0.32 / 0.44 (0.32 / 0.43), motorcycle 0.71 / 0.39 (0.78 / 0.37); without motion
compensation pedestrian 0.80 / 0.78 (0.92 / 0.96), car 0.36 / 0.36 (0.43 / 0.41), bus 0.49 / 0.63
(0.52 / 0.36), motorcycle 0.51 / 0.56 (0.52 / 0.53). The val scenes hold 6 buses (74 moving
annotations), so a few wrongly voted bus detections can move the class's term as far as 0.36 ->
0.63 (not examined further). Cost at test: the val's 80 iterations in 53.8 s against 44.8 s
without the votes (weights without motion compensation, seed 0, alone on 2 threads).

Twice the schedule (sessions 34-36, 7 Dec 2026; one thread each beside another training on the
2-core AMD EPYC, median 3.67 s per iteration with history, 2.11 without; seed 1 with history from
iteration 500 on alone on 2 threads, median 1.99 s): 3600 iterations (22 epochs of the 320 training
samples) with the warm-up and the cosine stretched to match, this config and the same config
without history, from scratch. This config's schedule since session 36; the runs below gave the
schedule as options (``SCHED``, the values the config now sets itself):

    SCHED="train_cfg.max_iters=3600 train_cfg.val_interval=1800 param_scheduler.0.end=180 \
        param_scheduler.1.end=3600 param_scheduler.1.T_max=3600"
    python tools/train.py $CONFIG --work-dir work_dirs/bev_tmp_2x_s0 --cfg-options $SCHED
    python tools/train.py $CONFIG --work-dir work_dirs/bev_nohist_2x_s0 --cfg-options $SCHED \
        train_dataloader.dataset.queue_length=1 train_dataloader.dataset.queue_range=0 \
        model.video_test=False model.velocity_refine=None
    # seed 1: _s1 work dirs and randomness.seed=1 among the options

    config                                  seed  it    NDS     mAP     mATE  mASE  mAOE  mAVE    mAAE
    this config, 2x schedule                0     1800  0.4319  0.2751  0.80  0.19  0.62  0.3543  0.09
    without history, 2x schedule            0     1800  0.4035  0.2611  0.79  0.20  0.79  0.3922  0.10
    this config, 2x schedule                0     3600  0.4772  0.3367  0.61  0.16  0.75  0.3025  0.09
    same weights, velocity_refine=None      0     3600  0.4759  0.3367  0.61  0.16  0.75  0.3206  0.08
    without history, 2x schedule            0     3600  0.4744  0.3800  0.61  0.15  0.90  0.4163  0.07
    without history, 2x schedule            1     1800  0.3829  0.2626  0.77  0.22  0.99  0.3987  0.11
    without history, 2x schedule            1     3600  0.4651  0.3546  0.61  0.16  0.86  0.4265  0.07
    this config, 2x schedule                1     1800  0.4144  0.2858  0.79  0.21  0.88  0.2983  0.11
    this config, 2x schedule                1     3600  0.4740  0.3510  0.61  0.16  0.86  0.2770  0.10
    same weights, velocity_refine=None      1     3600  0.4702  0.3510  0.61  0.16  0.86  0.3189  0.10

(The seed-0 history run was stopped at iteration 2250 and the seed-1 one at 710 (the machine
stopped) and resumed from their last checkpoints, 2250 and 500 (``--resume``): the data order is
replayed, the augmentations' random state is not, so neither is bit for bit the uninterrupted run;
seed 1's first 500 iterations ran on one thread beside another training, the rest alone on 2,
while its row without history ran on one thread throughout: not the same threads, which move a
run as much as a seed does (README, "Seeded runs repeat bit for bit only on the same number of
threads"); the seed-0 pair is matched (one thread each, side by side). At 1800 iterations the
rows without history trained on 2 threads (session 18) had the higher mAVE on both seeds than
those on one (session 29): 0.4253 / 0.4592 against 0.4081 / 0.4253, so the mismatch is not known
to favour the history row.)
mAVE is 27.3 % / 35.1 % below the same schedule without history on seeds 0 / 1 (0.3025 against
0.4163, 0.2770 against 0.4265; at the 1x schedule 20.0 % / 26.9 %), mean 31.2 %: **issue 14's
velocity target (30 % lower) reached on the mean of the two seeds**, not on seed 0 alone. Without
the test-time votes (same weights) 23.0 % / 25.2 %, mean 24.1 %: the votes of session 33, chosen on
the second set, carry the last 7 points. NDS 0.4772 / 0.4740 against 0.4744 / 0.4651 without
history (mean 0.4756 against 0.4698), mAP 0.337 / 0.351 against 0.380 / 0.355: twice the training
lifts both rows by 0.05-0.09 NDS; at 1800 of the 3600 iterations mAVE is 9.7 % / 25.2 % lower.
Seed 0 per class (the metric's velocity error, history / without): car 0.33 / 0.51, truck 0.20 /
0.25, bus 0.39 / 0.43, motorcycle 0.54 / 0.70, bicycle 0.10 / 0.15, pedestrian 0.85 / 1.29 (seed 1:
car 0.31 / 0.58, truck 0.15 / 0.30, bus 0.28 / 0.53, motorcycle 0.51 / 0.51, bicycle 0.13 / 0.14,
pedestrian 0.81 / 1.34); the seed-0 votes on these weights lower the pedestrians (1.00 -> 0.85) and
motorcycles (0.63 -> 0.54) and raise the cars (0.28 -> 0.33) and buses (0.34 -> 0.39). The voted
classes stay as they are: on the second set the same weights give mAVE 0.2819 with the configured
classes, 0.3424 with only the motorcycles and pedestrians, 0.3539 with none (cars 0.49 against 0.68,
buses 0.24 against 0.54 with the votes); the classes are chosen there, not on the val scenes.
``compare_matched.py`` (seed 0, without history as A, with it as B): the moving walkers both match
are at 1.01 m/s with the history against 1.64 without (0.65 / 0.67 along / across the line of sight
against 1.10 / 1.08; truth's speed 0.81 / 0.84), 20 % reversed against 57 %; moving cars 0.47
against 0.71 m/s.

Earlier rows (1 Dec 2026, both without denoising; the history then came from 2 of the 3 frames
before, drawn at random, and without the ego-motion embedding), against the static config's run
of session 4 on the same machine, each on one thread beside another training:

    config        it    NDS     mAP     mATE  mASE  mAOE  mAVE  mAAE  s/it
    static        900   0.2037  0.0504  1.20  0.42  1.09  0.64  0.16
    with history  900   0.1685  0.0516  1.07  0.41  1.19  0.95  0.22
    static        1800  0.2925  0.1443  0.92  0.38  1.03  0.36  0.14  3.1
    with history  1800  0.3198  0.1874  0.84  0.37  1.05  0.38  0.15  5.3

(that run's final checkpoint without history: NDS 0.2668, mAP 0.1139, mAVE 0.44). The three
changes of 4 Dec (denoising, consecutive queue frames, ego-motion embedding) were measured
together in one run, not one by one.
"""

from mmengine.config import read_base

with read_base():
    from .._base_.bevformer_r18_fpn_cpu_synth import *  # noqa: F401,F403

from bev_deform.datasets.samplers import SceneSequentialSampler

queue_length = 3

# twice the _base_'s 1800 iterations since session 36 (7 Dec 2026): both seeds' rows in the docstring
# (mAVE 31.2 % below the same schedule without history, mean of seeds 0 and 1; 23.5 % when both
# trained 1800 iterations)
max_iters = 2 * max_iters  # noqa: F405  (3600: 22 epochs of the 320 training samples)
param_scheduler[0].update(end=max_iters // 20)  # noqa: F405  (the warm-up, 180)
param_scheduler[1].update(end=max_iters, T_max=max_iters)  # noqa: F405
train_cfg.update(max_iters=max_iters, val_interval=max_iters // 2)  # noqa: F405

history_stride = 4  # the history frames are every fourth frame: 2 s apart (session 25; 1 s since session 19)
# video testing rebuilds each history from the frames 4 and 8 before, as the 3-frame queue trains it
model.update(  # noqa: F405
    video_test=True, max_history_gap=1.0, history_depth=queue_length - 1, history_stride=history_stride
)
# the ego motion since the history frame in the BEV queries (denoising comes with the _base_), and
# BEVDet4D's fusion of the aligned history after the encoder layers
model["bbox_head"]["encoder"].update(ego_motion_embed=True, history_fusion="conv")  # noqa: F405
# training only: DINO's look forward twice and the dense BEV head (session 17, see the docstring)
model["bbox_head"]["decoder"].update(look_forward_twice=True)  # noqa: F405
# every decoder layer also reads the history frame's cameras around each query's 3D point (session 21)
model["bbox_head"]["decoder"].update(history_attn=dict(num_heads=4, num_points=4, dropout=0.0))  # noqa: F405
# and the last one searches the history frame's cameras for where each query's object was
# (session 22; +-3 m since session 25, a walker's 2 s: 1.8-3.2 m); session 23's loss_weight=0.5
# and queue_norm="batch" were measured and not kept
model["bbox_head"]["decoder"].update(  # noqa: F405
    history_match=dict(match_dims=64, num_heads=4, radius=3.0, grid=9, level=0, layers=(-1,))
)
model["bbox_head"].update(bev_aux=dict(min_radius=1))  # noqa: F405
# from the second decoder layer on, the history reads moved back by the previous layer's velocity
# (session 30's motion_compensation: measured, not kept then; on since session 33, with the velocity
# votes below, chosen on the second synthetic set, see the docstring)
model["bbox_head"]["decoder"].update(motion_compensation=True)  # noqa: F405
# test time: the velocities of the moving classes voted from their detections of the 8 frames (4 s)
# before (session 33; set on a second synthetic set, see the docstring)
model.update(  # noqa: F405
    velocity_refine=dict(
        class_names=class_names,  # noqa: F405
        classes=dict(car=3.0, bus=3.0, motorcycle=3.0, pedestrian=2.0),
        num_frames=8,
    )
)
# session 31's history_track with per-class speed-scaled association was measured and not kept:
# --cfg-options model.bbox_head.history_track.num_frames=2 model.bbox_head.history_track.top_k=100
# model.bbox_head.history_track.speed_sigma=1.5 model.bbox_head.history_track.conditional=True
# session 28's search in every decoder layer was measured and not kept:
# --cfg-options "model.bbox_head.decoder.history_match.layers=[0,1,2]" (its rows in the docstring)
# session 27's query_propagation (the history frame's top-k queries carried in) was measured and not
# kept: --cfg-options model.bbox_head.query_propagation.top_k=100 (its rows in the docstring)
# session 24's history_track (the earlier frames' detections in the velocity) was measured and not
# kept: --cfg-options model.bbox_head.history_track.num_frames=2 model.bbox_head.history_track.top_k=100
# (its rows with the 1 s history of then: the strides 2 and radius 2.0, see the docstring)
# the queue's earlier frames are every fourth one before (a constant 2 s gap, as at test time)
train_dataloader["dataset"].update(  # noqa: F405
    queue_length=queue_length, queue_range=queue_length - 1, queue_stride=history_stride
)
val_dataloader["sampler"] = dict(type=SceneSequentialSampler)  # noqa: F405
# a batch whose samples all start their scene has no earlier frame: history_attn and history_match
# get no gradient
# then, which distributed training (tools/dist_train.sh) must allow
model_wrapper_cfg = dict(type="MMDistributedDataParallel", find_unused_parameters=True)
test_dataloader = val_dataloader  # noqa: F405
