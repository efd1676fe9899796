"""The residual quantizer: stages that each code what the stages before them left, and
decode on their own in every prefix."""

import pytest
import torch

from vqvae import VQVAE, VQVAEConfig


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = VQVAEConfig(hidden_channels=16, res_channels=8, embedding_dim=8, codebook_size=16,
                      num_stages=3, image_size=16, use_ema=True)  # fmt: skip
    return VQVAE(cfg).eval()


def test_a_plain_model_has_the_weights_it_always_had():
    m = VQVAE(VQVAEConfig(hidden_channels=8, res_channels=4, embedding_dim=4, codebook_size=8))
    assert not any(k.startswith("residual") for k in m.state_dict())
    shipped = VQVAE.from_pretrained("mnist")
    assert shipped.config.num_stages == 1 and len(shipped.residual) == 0


def test_stage_codes_and_their_prefixes(model):
    x = torch.rand(2, 3, 21, 30)
    codes = model.encode_image(x, stages=3)
    assert codes.shape == (2, 3, 6, 8) and codes.dtype == torch.int64
    assert torch.equal(codes[:, 0], model.encode_image(x))  # stage 1 is the plain code
    assert torch.equal(model.encode_image(x, stages=2), codes[:, :2])  # prefixes agree
    assert torch.equal(model.encode_image(x, stages=3, tile=8), codes)  # tiles too
    one = model.decode_codes(codes[:, :1], (21, 30))
    assert torch.equal(one, model.decode_codes(codes[:, 0], (21, 30)))


def test_each_stage_codes_what_the_others_left(model):
    """With each stage fit by k-means to what the stages before leave (as training starts
    them), every added stage brings the latents' approximation closer."""
    with torch.no_grad():
        z = model.encoder(torch.rand(16, 3, 16, 16) * 2 - 1)
        flat = z.permute(0, 2, 3, 1).reshape(-1, 8)
        model.quantizer.init_kmeans(flat)
        for n, stage in enumerate(model.residual, start=1):
            rest = z - model.quantize_stages(z, n)[0]
            stage.init_kmeans(rest.permute(0, 2, 3, 1).reshape(-1, 8))
        errors = []
        for n in (1, 2, 3):
            q, idx = model.quantize_stages(z, n)
            errors.append(float((z - q).pow(2).mean()))
            assert torch.allclose(q, model.lookup_stages(idx))
    assert errors[0] > errors[1] > errors[2]


def test_stages_out_of_range_are_refused(model):
    z = torch.zeros(1, 8, 2, 2)
    with pytest.raises(ValueError, match=r"stages must be in \[1, 3\]"):
        model.quantize_stages(z, 4)
    with pytest.raises(ValueError, match="3 quantizer stage"):
        model.decode_codes(torch.zeros(1, 4, 2, 2, dtype=torch.long))


def test_training_decodes_prefixes_and_updates_every_stage():
    torch.manual_seed(1)
    cfg = VQVAEConfig(hidden_channels=16, res_channels=8, embedding_dim=8, codebook_size=16,
                      num_stages=2, image_size=16, use_ema=True)  # fmt: skip
    m = VQVAE(cfg).train()
    before = m.residual[0].codebook.clone()
    out = m(torch.rand(8, 3, 16, 16))
    out.loss.backward()
    assert out.commitment_loss > 0 and torch.isfinite(out.loss)
    assert not torch.equal(before, m.residual[0].codebook)  # its EMA update ran
    assert m.encoder.net[0].weight.grad is not None


def test_the_code_caches_key_follows_the_encoder_as_well_as_the_codebooks(model):
    # an encoder retrained under frozen codebooks (--freeze quantizer) codes images anew:
    # the prior trainings' code caches must not be reused for it, while the priors, tied to
    # the codebooks, still fit it
    import copy

    from vqvae.config import codebook_fingerprint
    from vqvae.grid_prior import encoding_fingerprint, stage_fingerprint

    other = copy.deepcopy(model)
    assert encoding_fingerprint(other) == encoding_fingerprint(model)
    with torch.no_grad():
        next(other.decoder.parameters()).add_(0.1)
    assert encoding_fingerprint(other) == encoding_fingerprint(model)  # the codes' maker only
    with torch.no_grad():
        next(other.encoder.parameters()).add_(0.1)
    assert encoding_fingerprint(other) != encoding_fingerprint(model)
    assert stage_fingerprint(other) == stage_fingerprint(model)
    assert codebook_fingerprint(other) == codebook_fingerprint(model)
    with torch.no_grad():
        other.residual[1].codebook.add_(0.1)
    changed = encoding_fingerprint(other)
    assert changed != encoding_fingerprint(model) and stage_fingerprint(other) != stage_fingerprint(
        model
    )
