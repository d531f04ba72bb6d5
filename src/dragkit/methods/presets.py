"""The presets: every method dragkit ships, as data — its engine, its papers' defaults and citation. A diffusion
preset names its driver through ``sampler`` (:mod:`dragkit.methods.drivers`)."""

from __future__ import annotations

from .method import METHODS, Method, add_method

add_method(
    Method(
        name="draggan",
        engine="gan",
        summary="DragGAN: patch-L1 motion supervision + nearest-neighbour tracking on a GAN's features",
        citation="Pan et al., Drag Your GAN, SIGGRAPH 2023",
        # DragGAN's parts and rules; the numbers for the bundled 64×64 DCGAN were chosen by measurement
        # (scripts/gan_drag_eval.py, docs/gan_drags/README.md): the 256×8×8 code entering block 2 as the latent,
        # block 3's 32×32 features resized to the image, Adam lr 1e-3, up to 200 steps; stop within 2 px as
        # DragGAN's code does (max(2/512·h, 2) px).
        defaults={
            "tracker": "nearest",
            "supervision": "patch",
            "patch_shape": "disc",
            "drag_steps": 200,
            "latent_lr": 0.001,
            "r_m": 3,
            "r_p": 4,
            "lam": 10.0,
            "stop_distance": 2.0,
            "feature_block": 3,
            "latent_block": 2,
        },
        # On a StyleGAN2 generator, DragGAN's released code (viz/renderer.py at 336f120): its tracking (L2, exact
        # template) and its motion term (the linspace disc, mean L1), with the engine's numbers for the generator
        # (w+ rows 0-5, the 128-px block, r1 3 and r2 12 scaled to 512 px, λ 20): it tracks the points their code
        # tracks at every step (tests/oracle/draggan).
        variants={"stylegan2": {"tracker": "draggan", "supervision": "draggan"}},
    )
)

add_method(
    Method(
        name="dragdiffusion",
        engine="diffusion",
        summary="DragDiffusion: identity LoRA, DDIM inversion to t=681, patch-L1 supervision + NN tracking on UNet "
        "features, mutual self-attention while sampling",
        citation="Shi et al., DragDiffusion, CVPR 2024",
        # Every default of DragDiffusion's code (ALGORITHMS.md).
        defaults={
            "tracker": "nearest",
            "supervision": "patch",
            "patch_shape": "square",
            "drag_steps": 80,
            "latent_lr": 0.01,
            "r_m": 1,
            "r_p": 3,
            "lam": 0.1,
            "stop_distance": 2.0,
            "feature_block": 2,
            "inference_steps": 50,
            "inversion_strength": 0.7,
            "lora": "train",
            "lora_steps": 80,
            "lora_rank": 16,
            "lora_lr": 5e-4,
            "lora_batch": 4,
            "mutual_attn_start_layer": 10,
            "resize_width": 512,
        },
    )
)

# StableDrag (Cui et al., ECCV 2024): the two parts on top of each base method, its other numbers unchanged. The
# tracker's settings and τ are the registry defaults (chosen by measurement: docs/stabledrag.md).
_STABLEDRAG_PARTS = {"tracker": "discriminative", "supervision": "confidence_gated"}
_STABLEDRAG_CITATION = "Cui et al., StableDrag: Stable Dragging for Point-based Image Editing, ECCV 2024"

add_method(
    Method(
        name="stabledrag-gan",
        engine="gan",
        summary="StableDrag-GAN: DragGAN with discriminative point tracking and confidence-gated motion supervision",
        citation=_STABLEDRAG_CITATION,
        defaults={**METHODS["draggan"].defaults, **_STABLEDRAG_PARTS},
    )
)

add_method(
    Method(
        name="stabledrag",
        engine="diffusion",
        summary="StableDrag-Diff: DragDiffusion with discriminative point tracking and confidence-gated motion "
        "supervision",
        citation=_STABLEDRAG_CITATION,
        defaults={**METHODS["dragdiffusion"].defaults, **_STABLEDRAG_PARTS},
    )
)

# AdaptiveDrag (Chen et al. 2024): DragDiffusion's LoRA and features with the paper's own numbers and all of its
# parts — the automatic mask, semantic-region supervision and tracking, position-supervised backtracking, adaptive
# steps and CLoss while sampling (dragkit/parts/automask.py, supervision.py, trackers.py, schedules.py, closs.py).
_ADAPTIVEDRAG_PARTS = {
    "mask": "auto",
    "supervision": "semantic",
    "tracker": "semantic",
    "backtrack": True,
    "schedule": "adaptive",
}
_ADAPTIVEDRAG_CITATION = (
    "Chen, Chen, Geng, Bo, AdaptiveDrag: Semantic-Driven Dragging on Diffusion-Based Image Editing, "
    "arXiv:2410.12696, 2024"
)

add_method(
    Method(
        name="adaptivedrag",
        engine="diffusion",
        summary="AdaptiveDrag: automatic superpixel mask, semantic-region supervision and tracking, backtracking, "
        "adaptive steps and CLoss while sampling, on DragDiffusion's LoRA and features",
        citation=_ADAPTIVEDRAG_CITATION,
        defaults={
            **METHODS["dragdiffusion"].defaults,
            **_ADAPTIVEDRAG_PARTS,
            "drag_steps": 160,
            "inversion_strength": 0.8,
            "latent_lr": 0.01,
            "lam": 0.1,
            "closs_weight": 100.0,
        },
    )
)

add_method(
    Method(
        name="adaptivedrag-gan",
        engine="gan",
        summary="AdaptiveDrag on a GAN, mask-free: DragGAN with the automatic superpixel mask",
        citation=_ADAPTIVEDRAG_CITATION,
        # Measured on the DCGAN faces (docs/adaptivedrag/README.md): the automatic mask keeps the rest of the face
        # (LPIPS outside the drag 0.0105 → 0.0081 on 20 drags, 0.0138 → 0.0091 on 60 long ones) and moves as much.
        # AdaptiveDrag's other parts did not help this generator: backtracking tracks better but loses more long
        # drags (11 vs 6 of 60), the semantic patches (radii from the superpixel spacing) move less, adaptive steps
        # push stalled drags until the face breaks. All stay available by name (--set backtrack=true, ...).
        defaults={**METHODS["draggan"].defaults, "mask": "auto"},
        variants=METHODS["draggan"].variants,
    )
)

# CLIPDrag (Jiang, Wang, Chen, ICLR 2025): DragDiffusion's LoRA and features; the drag's gradient fused with the
# gradient of a CLIP loss on the edit prompt by their angle; fast point tracking; the authors' code's motion
# supervision (initial template, strides up to 4 px) and numbers (ALGORITHMS.md; n_pix_step 800 is their answer to
# "cannot reproduce").
add_method(
    Method(
        name="clipdrag",
        engine="diffusion",
        summary="CLIPDrag: an edit prompt's CLIP gradient fused with the drag's (global-local motion supervision), "
        "fast point tracking, on DragDiffusion's LoRA and features",
        citation="Jiang, Wang, Chen, CLIPDrag: Combining Text-based and Drag-based Instructions for Image Editing, "
        "ICLR 2025",
        defaults={
            **METHODS["dragdiffusion"].defaults,
            "tracker": "fast",
            "supervision": "initial",
            "motion_step": 4.0,
            "fusion": "glms",
            # their code's fusion, CLIP input and near-target tracking (issue 34: with the three, every tracking of
            # their four drags is theirs, tests/test_oracle_clipdrag.py); the paper's forms stay options
            "fusion_form": "code",
            "clip_preprocess": "clipdrag",
            "fast_near_rule": "code",
            "fusion_lambda": 0.7,
            "clip_weight": 300.0,
            "drag_steps": 800,
            "r_m": 1,
            "r_p": 3,
            "inversion_strength": 0.7,
            "latent_lr": 0.01,
        },
    )
)

# LucidDrag (Cui et al., NeurIPS 2024): no latent optimization; DragDiffusion's LoRA, inversion and mutual
# self-attention, then sampling guided by the editing energy, the intention's prompts and an image-fidelity
# discriminator (dragkit/parts/guidance.py, dragkit/intentions.py). Its energies, weights and schedule are open in
# the paper; ours are documented where they are defined.
add_method(
    Method(
        name="luciddrag",
        engine="diffusion",
        summary="LucidDrag: intention reasoning, then collaborative guidance while sampling (editing energy, "
        "semantic direction of the intention's prompts, image-fidelity discriminator); no latent optimization",
        citation="Cui et al., Localize, Understand, Collaborate: Semantic-Aware Dragging via Intention Reasoner, "
        "NeurIPS 2024",
        defaults={**METHODS["dragdiffusion"].defaults, "sampler": "guidance", "guide_quality": 1e-3},
    )
)


# GoodDrag (Zhang et al., ICLR 2025): DragDiffusion's LoRA, inversion and features; alternating drag and denoising
# (sampler=alternate, methods/drivers/alternate.py) with information-preserving motion supervision
# (supervision=initial: the template is always the original handle's features, those of the un-edited trajectory
# at each phase's timestep),
# strides of 4 grid pixels, tracking every 3 updates in a 25x25 window, an early stop when 10 tracking rounds in a
# row move nothing. The numbers are those its UI and benchmark run (ALGORITHMS.md, GoodDrag: gooddrag_ui.py,
# utils/ui_utils.py): lr 0.02, 7 phases of 10 tracking rounds x 3 updates, r1 4, r2 12, beta 4, inversion 0.75
# (t = 741), LoRA 70 steps. Two things their code does that the paper does not say, kept because the preset is
# checked against their code (tests/test_oracle_gooddrag.py, issue 34): a patch term is weighed by (2·r1)² = 64, not
# by its (2·r1+1)² = 81 positions (patch_weight=side: Adam is not blind to the scale, its epsilon sees it), and the
# tracking after each 3 updates reads the features of the forward before the last update (track_lagged). With both,
# dragkit tracks their handles at every tracking of their short drags.
add_method(
    Method(
        name="gooddrag",
        engine="diffusion",
        summary="GoodDrag: alternating drag and denoising (AlDD) with information-preserving motion supervision, "
        "strides of 4 px, periodic tracking and an early stop, on DragDiffusion's LoRA and features",
        citation="Zhang et al., GoodDrag: Towards Good Practices for Drag Editing with Diffusion Models, ICLR 2025",
        defaults={
            **METHODS["dragdiffusion"].defaults,
            "sampler": "alternate",
            "supervision": "initial",
            "motion_step": 4.0,
            "r_m": 4,
            "r_p": 12,
            "latent_lr": 0.02,
            "lam": 0.2,
            "patch_weight": "side",
            "track_lagged": True,
            "inversion_strength": 0.75,
            "drag_phases": 7,
            "drag_steps": 30,  # per phase: 10 tracking rounds of 3 updates
            "track_every": 3,
            "stuck_rounds": 10,
            "lora_steps": 70,
        },
    )
)

# DragNoise (Liu et al., CVPR 2024): DragDiffusion's inversion, features, motion supervision and tracking, but the
# variable the drag optimizes is the UNet's bottleneck (the mid block's output at the drag's timestep), and the
# optimized bottleneck then replaces the mid block's output while denoising (sampler=bottleneck,
# methods/drivers/bottleneck.py). The numbers are its released benchmark's (drag_bench_evaluation: lam 0.2, lr 0.02,
# 80 steps, inversion 0.7, a 200-step LoRA at lr 2e-4); its code's end_step 0 substitutes the bottleneck to the last
# step (propagate_end=0; the paper's t' = 10 is propagate_end=10), keeps the mask term on without a mask, and has
# no mutual self-attention. Checked against their code (tests/test_oracle_dragnoise.py).
add_method(
    Method(
        name="dragnoise",
        engine="diffusion",
        summary="DragNoise: DragDiffusion's supervision and tracking on the UNet's bottleneck (the mid block's "
        "output) instead of the latent, the optimized bottleneck substituted while denoising",
        citation="Liu et al., Drag Your Noise: Interactive Point-based Editing via Diffusion Semantic Propagation, "
        "CVPR 2024",
        defaults={
            **METHODS["dragdiffusion"].defaults,
            "sampler": "bottleneck",
            "latent_lr": 0.02,
            "lam": 0.2,
            "lora_steps": 200,
            "lora_lr": 2e-4,
            "propagate_end": 0,
        },
    )
)

# FreeDrag (Ling et al., CVPR 2024): DragDiffusion's LoRA, inversion, features and sampling; no point tracking. The
# drag runs in rounds (sampler=freedrag, methods/drivers/freedrag.py; parts/freedrag.py): a line search places each
# point on the segment to its target (at most d_max grid px, at the template distance l_expected), up to 5 updates
# pull the features around it toward its template, and the template adapts after each round. The numbers are its
# UI's (drag_ui.py, real-image tab): lam 10, l_expected 1, d_max 5, lr 0.01, 300 steps, inversion 0.7 (t = 681),
# mutual self-attention from layer 10, a 200-step LoRA at 2e-4. What their code does that the paper does not say, all
# kept since the preset follows their code (tests/test_oracle_freedrag.py; docs/freedrag.md): the template patch is
# 9x9 (r_m 4), threshold_d 2 and threshold_l = l_expected/2 are hard-coded, a point has arrived only when both hold
# and arrived points stay in the loss, the mask term is a mean over the latent (mask_reduction=mean) and only with a
# mask, and on a GPU the forwards run in fp16 autocast (here fp32 unless autocast is set).
add_method(
    Method(
        name="freedrag",
        engine="diffusion",
        summary="FreeDrag: adaptively updated point templates and a line search along each drag instead of point "
        "tracking, in rounds of up to 5 updates, on DragDiffusion's LoRA and features",
        citation="Ling et al., FreeDrag: Feature Dragging for Reliable Point-based Image Editing, CVPR 2024",
        defaults={
            **METHODS["dragdiffusion"].defaults,
            "sampler": "freedrag",
            "lam": 10.0,
            "mask_reduction": "mean",
            "l_expected": 1.0,
            "d_max": 5.0,
            "threshold_l_ratio": 0.5,
            "search_points": 10,
            "round_updates": 5,
            "r_m": 4,
            "stop_distance": 2.0,
            "latent_lr": 0.01,
            "drag_steps": 300,
            "inversion_strength": 0.7,
            "mutual_attn_start_layer": 10,
            "lora": "train",
            "lora_steps": 200,
            "lora_lr": 2e-4,
        },
    )
)

# RegionDrag (Lu, Li & Han, ECCV 2024): no optimization and no LoRA; the drag becomes latent-cell correspondences
# (the points' cells, or the painted region moved by the points: dragkit/parts/region.py), the image's posterior draw
# is SDE-inverted, and at every denoising step the handle cells of the inversion's latent are pasted on the target
# cells while every self-attention reads the keys and values of the mirrored inversion call (sampler=region,
# methods/drivers/region.py). The numbers are its released UI's: 20 steps, start_t 0.5 (10 inverted steps), handle
# noise 0.6, seed 42, "Encode then CP". Its code, not its paper, where they part: its end_t 0.2 never takes effect
# (a timestep compared with a step count: region_copy_end=0; the paper's end is region_copy_end=0.2), its timesteps
# are DPM-Solver's with a fixed stride of 1000 // 20 = 50 and the result is decoded at the timestep the last step
# reaches. Their pipeline also conditions on the image through IP-Adapter-Plus (scale 0.5): not implemented here, so
# this preset runs without it. Checked against their code without IP-Adapter (tests/test_oracle_regiondrag.py).
add_method(
    Method(
        name="regiondrag",
        engine="diffusion",
        summary="RegionDrag: region-to-region copy and paste of an SDE inversion's latents at every denoising step, "
        "self-attention keys and values from the inversion; one pass, no optimization, no LoRA",
        citation="Lu, Li & Han, RegionDrag: Fast Region-Based Image Editing with Diffusion Models, ECCV 2024",
        defaults={
            **METHODS["dragdiffusion"].defaults,
            "sampler": "region",
            "lora": "none",
            "inference_steps": 20,
            "inversion_strength": 0.5,
            "mutual_attn_start_layer": 0,  # every self-attention, as theirs
            "region_from": "auto",
            "region_noise": 0.6,
            "region_copy_end": 0.0,
        },
    )
)

# FastDrag (Zhao et al., NeurIPS 2024): no optimization and no LoRA; the inverted latent is warped in one step along
# the drags inside the editable region (dragkit/parts/warp.py), then sampled with the self-attention of the up blocks
# reading the keys and values the inversion recorded at each timestep (source_kv=inversion). Its released code's
# numbers: 10 DDIM steps, inversion 0.7 (the warp at t = 601), CFG 1, seed 42. Their code swaps in an LCM UNet
# (LCM_Dreamshaper_v7); this preset runs the checkpoint it is given. Their mask is required; ours defaults to the
# automatic one (mask=auto), and a painted one wins.
add_method(
    Method(
        name="fastdrag",
        engine="diffusion",
        summary="FastDrag: one-step latent warp of the editable region along the drags, empty places interpolated "
        "(BNNI), then sampling that reads the inversion's keys and values; no optimization, no LoRA",
        citation="Zhao et al., FastDrag: Manipulate Anything in One Step, NeurIPS 2024",
        defaults={
            **METHODS["dragdiffusion"].defaults,
            "sampler": "warp",
            "source_kv": "inversion",
            "lora": "none",
            "mask": "auto",
            "inference_steps": 10,
            "inversion_strength": 0.7,
            "mutual_attn_start_layer": 7,  # SD 1.5: every self-attention of up_blocks 1-3, as FastDrag's
            # the latent cells their code moves: the mask's bilinear resize above 0 (issue 34: with it the warp is
            # theirs to float noise, tests/test_oracle_fastdrag.py)
            "warp_region": "bilinear",
        },
    )
)


# Inpaint4Drag (Lu & Han, ICCV 2025): no inversion, no optimization, no LoRA training. The painted region is warped in
# pixels (dragkit/parts/biwarp.py: its bidirectional warp) and what it vacated, plus a 5-px seam along its moved
# outline, is inpainted by an SD inpainting checkpoint (sampler=inpaint, methods/drivers/inpaint.py). The numbers are
# its app's (utils/ui_utils.py): 8 LCM steps at strength 1 with the LCM-LoRA fused and TAESD as the autoencoder, an
# empty prompt, the generated pixels kept only where inpainted; its benchmark runs 4 steps and keeps the generated
# image in the whole painted region (inpaint_composite=region). A region is required. Checked against their code
# (tests/test_oracle_inpaint4drag.py).
add_method(
    Method(
        name="inpaint4drag",
        engine="diffusion",
        summary="Inpaint4Drag: the painted region warped in pixels (a bidirectional warp), what it vacated inpainted "
        "by an SD inpainting checkpoint in 8 LCM steps (LCM-LoRA, TAESD); no inversion, no optimization",
        citation="Lu & Han, Inpaint4Drag: Repurposing Inpainting Models for Drag-Based Image Editing via "
        "Bidirectional Warping, ICCV 2025",
        defaults={
            **METHODS["dragdiffusion"].defaults,
            "sampler": "inpaint",
            "lora": "none",
            "resize_width": 512,  # their app asks for a 512-px image first ("Resize Image")
        },
    )
)


# dragkit's own recipe (issue 24), chosen by measurement on faces64 (docs/dragkit_recipe.md: every candidate, the
# losers too; training seeds 0-59, confirmed once on held-out seeds 1000-1039). Every part is an existing one:
# FastDrag's one-step warp of the editable region (init by sampler=warp) and its sampling from the inversion's keys
# and values, at a low inversion strength (0.1: the warp keeps the content where it put it, one denoising step
# repairs the seams; 0.2 and 0.3 moved less, the regenerating noise pulling content back), AdaptiveDrag's automatic
# mask when none is painted, and the composite over the editable mask (outside it the result is the source). The warp
# samples backward (warp_sample=backward, Inpaint4Drag's mapping on FastDrag's warpage function): each place takes
# the content bilinearly from where the warp came from, so a stretched region does not tear into blocks (median MD on
# seeds 0-59 1.21/1.71/4.18 -> 1.00/1.41/3.61 px; on the DCGAN's 16x16 code it lost, so dragkit-gan relocates).
add_method(
    Method(
        name="dragkit",
        engine="diffusion",
        summary="dragkit's recipe: FastDrag's one-step warp, sampled backward, at a low inversion strength (0.1), "
        "sampling from the inversion's keys and values, the automatic mask, the source kept outside the mask "
        "(composite); no LoRA, no optimization",
        citation="dragkit (issue 24), from the parts of Zhao et al. (FastDrag, NeurIPS 2024), Chen et al. "
        "(AdaptiveDrag, 2024) and Lu & Han (Inpaint4Drag, ICCV 2025)",
        defaults={
            **METHODS["fastdrag"].defaults,
            "inversion_strength": 0.1,
            "composite": "mask",
            "warp_sample": "backward",
            "warp_region": "any",  # as measured (issue 24): every cell the mask touches
        },
    )
)


# dragkit's recipe on a GAN (issue 24): StableDrag-GAN's tracker and gate, starting from a one-step warp of the
# generator's spatial code entering block 3 (128x16x16 on the DCGAN: 4 image px a cell), the source kept outside
# the editable mask (AdaptiveDrag's automatic one when none is painted). Chosen among 6 variants on seeds 0-39
# (docs/dragkit_recipe.md): the warp at block 2 (8x8) moved less; without the warp the content barely moves on long
# drags. Issue 32 chose the warp's field again by MD and realism together (docs/dragkit_recipe.md, "Realism"): on 40
# training drags the cut-and-move (warp_field=move) was as real as the stretch (median realism 0.0805 against
# 0.0810), closer (median MD after/before 0.20 against 0.30; 3 drags lost against 7) and faster. Held out it met
# the MD targets for both handle kinds where the stretch missed long drags from random handles (4.24 against 14.09
# px after), more real on long drags, less on short ones from distinctive handles.
add_method(
    Method(
        name="dragkit-gan",
        engine="gan",
        summary="dragkit's recipe on a GAN: a one-step cut-and-move of the generator's spatial code (block 3), "
        "then StableDrag's tracking and confidence-gated supervision, the automatic mask, the source kept outside the "
        "mask (composite)",
        citation="dragkit (issue 24), from the parts of Zhao et al. (FastDrag, NeurIPS 2024), Cui et al. "
        "(StableDrag, ECCV 2024) and Lu & Han (Inpaint4Drag, ICCV 2025)",
        defaults={
            **METHODS["stabledrag-gan"].defaults,
            "init": "warp",
            "latent_block": 3,
            "warp_field": "move",
            "mask": "auto",
            "composite": "mask",
        },
        # On a StyleGAN2 generator the warp moves the features and image entering the 64-px block (a 32×32 code,
        # the DCGAN's 16×16 at twice the cells); not measured on real StyleGAN weights (none are available offline).
        variants={"stylegan2": {"latent_block": 4}},
    )
)

add_method(
    Method(
        name="identity",
        engine="identity",
        summary="returns the input unchanged: the benchmark harness's control (MD ≈ the drag length, IF = 1)",
        citation="dragkit",
    )
)
