"""``ChatCostAware`` in an ordinary LangChain chain: prompt | model | parser.

    python examples/chain.py ["What is 12 + 30?"]

Runs offline on the embedded default (SmolLM2-135M-Instruct served by llama.cpp); with
``OPENAI_API_KEY`` set, hard questions may escalate to the remote tier. It prints the
answer, then what the call cost: the arms tried, the model that answered, tokens and dollars
(read from the AIMessage's ``usage_metadata`` / ``response_metadata``).
"""

from __future__ import annotations

import sys

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

from effreason_agents import ChatCostAware


def main(question: str) -> None:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer the question; give just the answer."), ("user", "{question}")]
    )
    model = ChatCostAware(max_cost_usd="0.01")

    # The plain chain: a string in, a string out.
    chain = prompt | model | StrOutputParser()
    # The same chain, keeping the AIMessage to show what it cost.
    with_message = prompt | model | {"answer": StrOutputParser(), "message": RunnablePassthrough()}

    out = with_message.invoke({"question": question})
    message = out["message"]
    meta, usage = message.response_metadata, message.usage_metadata or {}
    print(f"question: {question}")
    print(f"answer: {out['answer']}")
    print(
        f"cost: ${meta['cost_usd']} ({usage.get('input_tokens', 0)} input + {usage.get('output_tokens', 0)} output tokens; "
        f"arms {', '.join(meta['arms_tried']) or '-'}; answered by {meta['model_name']}; status {meta['status']}; "
        f"confidence {meta['confidence']})"
    )
    print(f"chain.invoke -> {chain.invoke({'question': question})!r}")


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or "What is 2 + 3?")
