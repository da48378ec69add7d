"""Instruction and preference data for finetuning (issue 17): MindSpeed-LLM's handlers, prompt templates as data,
the `llmctl data sft` stage and torch-free readers of its output.

Public API (what the trainer and `llmctl chat` use):
  templates.get_template(name, path=None) -> Template
  templates.render(template, messages, add_generation_prompt=False, *, system=None, tokenizer=None) -> [Segment]
  templates.encode_conversation(tokenizer, template, messages, *, system=None, add_generation_prompt=False)
      -> (input_ids, labels)
  templates.stop_token_ids(tokenizer, template) -> [int];  Template.stop_words
  datasets.SFTDataset(prefix), datasets.PairwiseDataset(prefix); bus datasets "sft" and "dpo"
  preprocess.preprocess_sft(...) -> report
"""
