"""The learner's tools: the workspace of skeletons (and their pristine copies), where a learner stands, and the
diagnosis of an error raised in their code."""
