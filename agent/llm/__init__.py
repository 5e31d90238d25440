"""The LLM brainstormer and what it needs: the OpenAI-compatible client (`client`), config files
(`config`), prompts rendered from jinja2 templates (`prompting`), token estimates (`tokens`) and
usage accounting (`accounting`).  The brainstormer itself is `brainstormer.OpenAIBrainstormer`."""
