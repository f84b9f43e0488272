"""The task models: a classifier on the CLS token, the distilled classifier with two heads, and masked image modeling"""
from dataclasses import dataclass
import torch
import torch.nn.functional as F
from torch import nn
from deit_scratch.config import DeiTConfig
from deit_scratch.encoder import DeiTPreTrainedModel, DeiTModel, ModelOutput

@dataclass
class ImageClassifierOutput(ModelOutput):
    loss:torch.Tensor=None; logits:torch.Tensor=None; hidden_states:tuple=None; attentions:tuple=None

@dataclass
class DeiTForImageClassificationWithTeacherOutput(ModelOutput):
    logits:torch.Tensor=None; cls_logits:torch.Tensor=None; distillation_logits:torch.Tensor=None
    hidden_states:tuple=None; attentions:tuple=None

@dataclass
class MaskedImageModelingOutput(ModelOutput):
    loss:torch.Tensor=None; reconstruction:torch.Tensor=None; hidden_states:tuple=None; attentions:tuple=None

def linear_head(config:DeiTConfig) -> nn.Module:
    return nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()

def classification_loss(logits:torch.Tensor, labels:torch.Tensor, config:DeiTConfig) -> torch.Tensor:
    "transformers' loss by `problem_type`, inferring it (and storing it in `config`) on first use"
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels has batch size {labels.shape[0]} but the logits have {logits.shape[0]}")
    K = config.num_labels
    if config.problem_type is None:
        if K == 1: config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int): config.problem_type = "single_label_classification"
        else: config.problem_type = "multi_label_classification"
    labels = labels.to(logits.device)
    if config.problem_type == "regression":
        return F.mse_loss(logits.squeeze(), labels.squeeze()) if K == 1 else F.mse_loss(logits, labels)
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, K), labels.view(-1), ignore_index=-100)
    if tuple(labels.shape) != tuple(logits.shape):
        raise ValueError(f"multi-label classification needs labels of shape {tuple(logits.shape)} (one 0/1 per class), got {tuple(labels.shape)}")
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))

class DeiTForImageClassification(DeiTPreTrainedModel):
    "DeiT with a linear classifier on the final CLS token (the distillation token is computed but ignored)"
    def __init__(self, config:DeiTConfig):
        super().__init__(config)
        self.deit = DeiTModel(config, add_pooling_layer=False)
        self.classifier = linear_head(config)
        self.post_init()

    def forward(self, pixel_values, head_mask=None, labels=None, output_attentions=None, output_hidden_states=None,
                interpolate_pos_encoding=False, return_dict=None):
        out = self.deit(pixel_values, head_mask=head_mask, output_attentions=output_attentions,
                        output_hidden_states=output_hidden_states, interpolate_pos_encoding=interpolate_pos_encoding)
        logits = self.classifier(out.last_hidden_state[:, 0])           # (B, num_labels)
        loss = classification_loss(logits, labels, self.config) if labels is not None else None
        res = ImageClassifierOutput(loss, logits, out.hidden_states, out.attentions)
        return res if self._flag(return_dict, "return_dict") else res.to_tuple()

class DeiTForImageClassificationWithTeacher(DeiTPreTrainedModel):
    "DeiT with two heads, on the CLS and the distillation token; `logits` is their average"
    def __init__(self, config:DeiTConfig):
        super().__init__(config)
        self.deit = DeiTModel(config, add_pooling_layer=False)
        self.cls_classifier = linear_head(config)
        self.distillation_classifier = linear_head(config)
        self.post_init()

    def forward(self, pixel_values, head_mask=None, output_attentions=None, output_hidden_states=None,
                interpolate_pos_encoding=False, return_dict=None):
        out = self.deit(pixel_values, head_mask=head_mask, output_attentions=output_attentions,
                        output_hidden_states=output_hidden_states, interpolate_pos_encoding=interpolate_pos_encoding)
        cls_logits = self.cls_classifier(out.last_hidden_state[:, 0])                   # (B, num_labels)
        dist_logits = self.distillation_classifier(out.last_hidden_state[:, 1])         # (B, num_labels)
        res = DeiTForImageClassificationWithTeacherOutput((cls_logits + dist_logits) / 2, cls_logits, dist_logits,
                                                          out.hidden_states, out.attentions)
        return res if self._flag(return_dict, "return_dict") else res.to_tuple()

class DeiTForMaskedImageModeling(DeiTPreTrainedModel):
    "SimMIM: replace masked patches by a learned token, reconstruct the pixels with a 1x1 conv + pixel shuffle"
    def __init__(self, config:DeiTConfig):
        super().__init__(config)
        self.deit = DeiTModel(config, add_pooling_layer=False, use_mask_token=True)
        self.decoder = nn.Sequential(
            nn.Conv2d(config.hidden_size, config.encoder_stride**2 * config.num_channels, kernel_size=1),
            nn.PixelShuffle(config.encoder_stride))
        self.post_init()

    def forward(self, pixel_values, bool_masked_pos=None, head_mask=None, output_attentions=None,
                output_hidden_states=None, interpolate_pos_encoding=False, return_dict=None):
        out = self.deit(pixel_values, bool_masked_pos=bool_masked_pos, head_mask=head_mask, output_attentions=output_attentions,
                        output_hidden_states=output_hidden_states, interpolate_pos_encoding=interpolate_pos_encoding)
        pe = self.deit.embeddings.patch_embeddings
        gh,gw = pixel_values.shape[-2] // pe.patch_size[0], pixel_values.shape[-1] // pe.patch_size[1]
        x = out.last_hidden_state[:, 2:]                                   # (B, N, C): drop CLS and DIST
        B,N,C = x.shape
        x = x.transpose(1, 2).reshape(B, C, gh, gw)                        # (B, C, gh, gw)
        recon = self.decoder(x)                                            # (B, num_channels, gh*stride, gw*stride)
        loss = None
        if bool_masked_pos is not None:
            if recon.shape[-2:] != pixel_values.shape[-2:]:
                raise ValueError(f"The reconstruction is {tuple(recon.shape[-2:])} but the input is {tuple(pixel_values.shape[-2:])}: "
                                 f"encoder_stride ({self.config.encoder_stride}) must equal patch_size ({self.config.patch_size})")
            ph,pw = pe.patch_size
            mask = bool_masked_pos.reshape(B, gh, gw).repeat_interleave(ph, 1).repeat_interleave(pw, 2).unsqueeze(1)  # (B, 1, H, W)
            l1 = F.l1_loss(pixel_values, recon, reduction="none")
            loss = (l1 * mask).sum() / (mask.sum() + 1e-5) / self.config.num_channels
        res = MaskedImageModelingOutput(loss, recon, out.hidden_states, out.attentions)
        return res if self._flag(return_dict, "return_dict") else res.to_tuple()
